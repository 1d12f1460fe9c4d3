#!/usr/bin/env bash
# Side-by-side speed run of the synthetic Tsetlin workload: fastcore_ad and its peers, one
# after the other in one shell, each printing one line (s/epoch, prediction time, accuracy).
# Peers live in their own virtual environments (see bench/peers_tsetlin.py):
#   PEERS=/tmp/tm_peers (green-tsetlin, pyTsetlinMachine), TMU=/tmp/tmu_env (tmu, numpy<2).
# Usage: bash bench/tsetlin_speed_table.sh [EPOCHS]
set -u
cd "$(dirname "$0")/.."
EPOCHS=${1:-2}
PY=${PY:-.venv/bin/python}
PEERS=${PEERS:-/tmp/tm_peers}
TMU=${TMU:-/tmp/tmu_env}
$PY bench/speed_tsetlin.py 2 "$EPOCHS"
$PY bench/speed_tsetlin.py 1 "$EPOCHS"
if [ -x "$PEERS/bin/python" ]; then
    "$PEERS/bin/python" bench/peers_tsetlin.py green2 1
    "$PEERS/bin/python" bench/peers_tsetlin.py green1 1
    "$PEERS/bin/python" bench/peers_tsetlin.py pytm 1
else
    echo "no $PEERS: green-tsetlin and pyTsetlinMachine skipped"
fi
if [ -x "$TMU/bin/python" ]; then
    "$TMU/bin/python" bench/peers_tsetlin.py tmu_sparse 1 2>/dev/null
    "$TMU/bin/python" bench/peers_tsetlin.py tmu 1 2>/dev/null
else
    echo "no $TMU: tmu skipped"
fi
