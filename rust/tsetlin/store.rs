//! How the automata are held while training: the model's bit planes, or one byte per
//! automaton with deferred forgetting.

use super::bytes::{Kernels, Lane};
use super::evaluate::summarize;
use super::feedback::{Feedback, Kind};
use super::random::MaskCursor;

/// How the automata are held while training: bit planes (any `state_bits`) or bytes.
pub(super) trait Store: Sync {
    type Cell: Send;
    fn cells_per_clause(&self, lw: usize) -> usize;
    #[allow(clippy::too_many_arguments)]
    fn feedback(
        &self,
        fb: &Feedback,
        kind: Kind,
        fired: bool,
        action: &mut [u64],
        cells: &mut [Self::Cell],
        summary: &mut [u64],
        literals: &[u64],
        cursor: MaskCursor,
    );
}

/// Bit-sliced storage with `P` lower planes, the model's own layout.
pub(super) struct Planes<const P: usize>;

impl<const P: usize> Store for Planes<P> {
    type Cell = u64;
    fn cells_per_clause(&self, lw: usize) -> usize {
        lw * P
    }
    fn feedback(
        &self,
        fb: &Feedback,
        kind: Kind,
        fired: bool,
        action: &mut [u64],
        cells: &mut [u64],
        summary: &mut [u64],
        literals: &[u64],
        cursor: MaskCursor,
    ) {
        fb.apply::<P>(kind, fired, action, cells, literals, cursor);
        summarize(action, summary);
    }
}

/// Byte storage. Each clause's `lw` lanes are followed by a header that defers forgetting:
/// Type I feedback on a clause that did not fire only decrements (each automaton with
/// probability 1/s) and is by far the most frequent update, so it is applied at once to the
/// words that hold include bits (they decide the clause's output) and queued for the others,
/// which catch up in one pass, each lane loaded once for the whole queue, before the clause's
/// next increment or at the end of the call. Decrements of excluded automata never change an
/// output, and each lane takes the queued steps in their original order with their original
/// masks, so the states are exactly those of immediate updates.
pub(super) struct ByteStore {
    pub(super) kernels: Kernels,
    pub(super) lw: usize,
    pub(super) header: usize,
}

/// Deferred forgetting steps a clause may queue before it catches up.
const MAX_DEFERRED: usize = 16;
const CURSORS_AT: usize = 4;
const APPLIED_AT: usize = CURSORS_AT + 4 * MAX_DEFERRED;

/// The header of one clause, bytes over whole lanes: byte 0 the number of queued steps, then
/// their mask cursors (4 bytes each), then per word how many queued steps it took before its
/// last include bit went (0 for the others). Only decrements are queued, so a word never
/// regains an include bit within a queue: words that have one took every step, words that
/// never had one took none, and only a word that lost its last one needs its count, written
/// once, when that happens (so a step touches the header only there).
pub(super) struct Deferred<'a>(&'a mut [Lane]);

impl Deferred<'_> {
    pub(super) fn lanes_for(lw: usize) -> usize {
        (APPLIED_AT + lw).div_ceil(64)
    }
    fn get(&self, i: usize) -> u8 {
        self.0[i / 64].0[i % 64]
    }
    fn set(&mut self, i: usize, v: u8) {
        self.0[i / 64].0[i % 64] = v;
    }
    fn queued(&self) -> usize {
        self.get(0) as usize
    }
    fn cursor(&self, j: usize) -> MaskCursor {
        let at = CURSORS_AT + 4 * j;
        let packed = u32::from_le_bytes([
            self.get(at),
            self.get(at + 1),
            self.get(at + 2),
            self.get(at + 3),
        ]);
        MaskCursor {
            offset: (packed & 0xffff) as usize,
            rotation: packed >> 16,
        }
    }
    /// The queued steps: how many, and their mask cursors.
    fn steps(&self) -> (usize, [MaskCursor; MAX_DEFERRED]) {
        let n = self.queued();
        let mut cursors = [MaskCursor {
            offset: 0,
            rotation: 0,
        }; MAX_DEFERRED];
        for (j, c) in cursors.iter_mut().enumerate().take(n) {
            *c = self.cursor(j);
        }
        (n, cursors)
    }
    /// The first queued step word `w` has not taken, its mark cleared for the next queue.
    fn take_first(&mut self, w: usize) -> usize {
        let first = self.get(APPLIED_AT + w);
        if first != 0 {
            self.set(APPLIED_AT + w, 0);
        }
        first as usize
    }
    fn push(&mut self, cursor: MaskCursor) {
        let j = self.queued();
        let packed = (cursor.offset as u32) | (cursor.rotation << 16);
        for (k, b) in packed.to_le_bytes().into_iter().enumerate() {
            self.set(CURSORS_AT + 4 * j + k, b);
        }
        self.set(0, (j + 1) as u8);
    }
}

impl ByteStore {
    /// Bring every word of the clause up to date and empty its queue.
    pub(super) fn catch_up(&self, fb: &Feedback, action: &[u64], cells: &mut [Lane]) {
        let (lanes, header) = cells.split_at_mut(self.lw);
        let mut deferred = Deferred(header);
        let (n, cursors) = deferred.steps();
        if n == 0 {
            return;
        }
        self.kernels.catch_up(
            action,
            lanes,
            n,
            |w| deferred.take_first(w),
            |j, w| fb.valid_literals[w] & cursors[j].mask(&fb.forget_pool, w),
        );
        deferred.set(0, 0);
    }
}

impl Store for ByteStore {
    type Cell = Lane;
    fn cells_per_clause(&self, lw: usize) -> usize {
        lw + self.header
    }
    fn feedback(
        &self,
        fb: &Feedback,
        kind: Kind,
        fired: bool,
        action: &mut [u64],
        cells: &mut [Lane],
        summary: &mut [u64],
        literals: &[u64],
        cursor: MaskCursor,
    ) {
        match kind {
            Kind::TypeII if !fired => {}
            Kind::TypeI if !fired => {
                if Deferred(&mut cells[self.lw..]).queued() == MAX_DEFERRED {
                    self.catch_up(fb, action, cells);
                }
                let (lanes, header) = cells.split_at_mut(self.lw);
                let mut deferred = Deferred(header);
                let taken = (deferred.queued() + 1) as u8;
                self.kernels.forget_included(
                    action,
                    lanes,
                    summary,
                    |w| fb.valid_literals[w] & cursor.mask(&fb.forget_pool, w),
                    |w| deferred.set(APPLIED_AT + w, taken),
                );
                deferred.push(cursor);
            }
            _ => {
                self.catch_up(fb, action, cells);
                let lanes = &mut cells[..self.lw];
                fb.apply_bytes_fired(
                    &self.kernels,
                    kind,
                    action,
                    lanes,
                    summary,
                    literals,
                    cursor,
                );
            }
        }
    }
}
