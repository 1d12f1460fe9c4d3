//! Tsetlin Machine: bit-packed clause evaluation, Type I / Type II feedback and class sums
//! (Granmo 2018; Berge et al. 2019; integer-weighted clauses after Abeyrathna et al. 2020;
//! the coalesced shared clause pool after Glimsdal & Granmo 2021).
//!
//! Layout. Literals are the `n` features followed by their `n` negations, each half padded to
//! whole 64-bit words (`fw` words each, `lw = 2 fw` in all). Every automaton has `2^b` states,
//! stored bit-sliced: the top bit plane (the "include" or action bit) lives in its own array,
//! contiguous per clause (`action[clause][lw]`), so clause evaluation streams only 1/b of the
//! state. The lower `b - 1` planes are stored word-major (`lower[clause][word][plane]`) so the
//! carry (or borrow) of an increment touches neighbouring words and stops as soon as it is zero.
//!
//! Training calls of more than a few examples copy the automata into one byte each
//! (`bytes.rs`, AVX-512BW or AVX2, `state_bits <= 8`): a masked saturating add or subtract then moves
//! all 64 automata of a word at once, and the planes are written back at the end. Clause
//! evaluation during training reads only the include words a per-clause summary bitmap marks
//! as non-zero (clauses include a few literals each). Forgetting on clauses that did not fire
//! (Type I, decrements only, ~90% of all updates) reaches the words without include bits
//! lazily, in one pass per run of such updates (`ByteStore`).
//!
//! Randomness is counter based: every draw is a keyed hash of (seed, epoch, example, role,
//! class, clause). The per-literal Bernoulli(1/s) masks come from a table of 2^15 64-bit masks
//! built once per epoch from the same keyed stream; an updated clause reads it at an offset and
//! bit rotation drawn from its own key (one table load per 64 literals instead of a random
//! number per literal). No generator is shared, so the model is bit-identical for any thread
//! count, and `tests/reference/tsetlin.py` replays the stream exactly.
//!
//! Prediction on sparse documents walks feature -> clause lists (the clauses that include each
//! feature, and those that include its negation), so a document touches only the clauses its
//! present features name; dense documents use the word-parallel AND over the include plane.
//!
//! Weights. Each (class, clause) pair carries a signed integer weight. In the per-class machine
//! its sign is the clause's fixed polarity (even clauses +, odd clauses -) and its magnitude
//! starts at 1; with `weighted` the magnitude grows by 1 on Type I feedback when the clause
//! outputs 1 and shrinks by 1 on Type II feedback when it outputs 1, never below 1 (the
//! integer-weighted TM's weights are positive integers, so a clause is never silenced and
//! keeps its polarity). In the coalesced machine one pool of clauses is shared by all classes
//! and every class holds its own signed weight per clause (initialised to +1 or -1 at random);
//! when the clause outputs 1 the target class's weight moves up by 1 and the negative class's
//! weight down by 1, and the weight's sign decides the feedback type.
//!
//! Files, in the order a call uses them: `config.rs` (hyper-parameters, shapes, documents),
//! `random.rs` (the counter-based stream and the mask tables), `automata.rs` (bit-sliced
//! counters, the initial state), `evaluate.rs` (clause outputs and class sums), `feedback.rs`
//! (Type I / Type II feedback on one clause), `store.rs` (bit planes or bytes while training),
//! `bytes.rs` (the AVX-512BW and AVX2 byte kernels) and `train.rs` (the training loop).

mod automata;
mod bytes;
mod config;
mod evaluate;
mod feedback;
mod random;
mod store;
mod train;

pub use automata::{initial_state, validate_state};
pub use config::{Config, Docs, MAX_STATE_BYTES};
pub use evaluate::{class_sums, clause_outputs};
pub use random::{
    mask_pool, mix64, stream_key, stream_step, MASK_POOL_WORDS, ROLE_DROP, ROLE_INIT_WEIGHT,
    ROLE_NEGATIVE, ROLE_PICK_NEGATIVE, ROLE_TARGET,
};
pub use train::train_epoch;
