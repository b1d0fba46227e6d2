"""Streamed input on several workers: two TensorFlow workers on loopback train on generated credit rows,
each encoding and reading only its own share of the blocks, and end where one streamed process ends."""
import json
import math
import re
import subprocess

import pytest
import yaml

from test_train_stream import CLI, auc_on_test, cli, prepare, write_params

EPOCHS, BATCH = 4, 1024
# worker i's progress line each epoch (flex_ml.train._say_read), as the launcher relays it
READ = re.compile(r"^\[worker (\d+)\] worker (\d+) of 2, epoch (\d+): read (\d+) of (\d+) blocks \[([\d, ]*)\], "
                  r"([\d,]+) rows in (\d+) batches")
# worker i's last encoding line for the training split (flex_ml.stream.encode_blocks)
ENCODED = re.compile(r"^\[worker (\d+)\] encoded ([\d,]+) of ([\d,]+) rows into (\d+) blocks \(this worker's (\d+) of (\d+) blocks\)")


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory, credit_raw):
    """80,000 generated rows validated and split in 10,000-row chunks: 48,000 training rows in five shards, so five
    blocks to deal out, unevenly (no teacher: this is about the input, not the targets)."""
    d = tmp_path_factory.mktemp("stream_workers")
    p = write_params(d / "params.yaml", d / "g" / "data.csv", input="stream", batch_size=BATCH, teacher_weight=0.0)
    p["engine"]["chunk_rows"] = 10_000
    p["evaluate"]["bootstrap_resamples"] = 30
    (d / "params.yaml").write_text(yaml.safe_dump(p))
    prepare(d, credit_raw, 80_000, seed=8)
    return d


def reads_by_epoch(stdout: str) -> dict:
    "{epoch: {worker: (blocks, rows, batches)}} from the workers' progress lines."
    out = {}
    for line in stdout.splitlines():
        if (m := READ.match(line)) is None: continue
        relay, worker, epoch, n_read, _, blocks, rows, batches = m.groups()
        assert relay == worker, line
        ks = [int(k) for k in blocks.split(",")] if blocks else []
        assert len(ks) == int(n_read), line
        out.setdefault(int(epoch), {})[int(worker)] = (ks, int(rows.replace(",", "")), int(batches))
    return out


@pytest.mark.slow
def test_two_workers_each_read_their_own_blocks(small_shards):
    """`flex-ml train --workers 2` on streamed input: each worker encodes only its own blocks, and every epoch the
    workers read those, disjoint and together every block once, take the same steps of half the batch, report the
    same validation figures; the chief's model scores within 0.01 test AUC of one streamed process, and its export passes the parity check (about 3 minutes)."""
    d = small_shards
    r = subprocess.run(CLI + ["train", "--workers", "2", "--timeout", "500", "--split-dir", "s", "--out", "t_workers",
                              "--params", "params.yaml"], cwd=d, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    summary = json.loads((d / "t_workers" / "summary.json").read_text())
    n_blocks, n_train = summary["input"]["blocks"], summary["n_train"]
    assert summary["workers"] == 2 and summary["input"]["kind"] == "stream" and summary["input"]["worker_batch_size"] == BATCH // 2
    assert summary["epochs_run"] == EPOCHS and n_blocks >= 4, summary
    steps = math.ceil(n_train / BATCH)
    reads = reads_by_epoch(r.stdout)
    print("\n".join(l for l in r.stdout.splitlines() if READ.match(l) or " - val_auc: " in l or "worker(s) done" in l))
    assert sorted(reads) == list(range(1, EPOCHS + 1)), r.stdout[-3000:]
    for epoch, by_worker in reads.items():
        (b0, rows0, n0), (b1, rows1, n1) = by_worker[0], by_worker[1]
        assert not set(b0) & set(b1) and sorted(b0 + b1) == list(range(n_blocks)), (epoch, b0, b1)  # each block once
        assert 0 < len(b0) < n_blocks and 0 < len(b1) < n_blocks  # neither read them all
        assert n0 == n1 == steps and rows0 == rows1 == steps * BATCH // 2, (epoch, by_worker)
    for i in (0, 1):  # each worker owns its blocks for the run: the same ones every epoch (04d: in a new order)
        assert len({tuple(reads[e][i][0]) for e in reads}) == 1, reads
    encoded = {}
    for line in r.stdout.splitlines():
        if (m := ENCODED.match(line)): encoded[int(m[1])] = (int(m[2].replace(",", "")), int(m[5]), int(m[6]))
    # each encoded only its own blocks, the ones it reads: together the split once
    assert sorted(encoded) == [0, 1] and encoded[0][0] + encoded[1][0] == n_train, encoded
    assert encoded[0][1] + encoded[1][1] == n_blocks and {encoded[i][2] for i in (0, 1)} == {n_blocks}, encoded
    assert encoded[0][1] == len(reads[1][0][0]) and encoded[1][1] == len(reads[1][1][0]), (encoded, reads[1])
    for i in (0, 1):  # Keras took the same steps on each worker: its own batches, neither re-sharded nor split
        epochs = [l for l in r.stdout.splitlines() if l.startswith(f"[worker {i}] ") and " - val_auc: " in l]
        assert len(epochs) == EPOCHS and all(l.split("] ", 1)[1].startswith(f"{steps}/{steps} ") for l in epochs), epochs
    per_worker = [[l.split("val_auc: ")[1].split()[0] for l in r.stdout.splitlines() if l.startswith(f"[worker {i}] ") and " - val_auc: " in l]
                  for i in (0, 1)]
    assert per_worker[0] == per_worker[1], per_worker  # both evaluate every validation row: the same figures
    cli(["train", "--split-dir", "s", "--out", "t_one", "--params", "params.yaml"], d)
    auc = {t: auc_on_test(d / t, d / "s") for t in ("t_workers", "t_one")}
    print("test AUC", auc)
    assert auc["t_one"] > 0.70 and abs(auc["t_workers"] - auc["t_one"]) <= 0.01, auc
    cli(["evaluate", "--split-dir", "s", "--train-dir", "t_workers", "--out", "e", "--params", "params.yaml"], d)
    e = cli(["export", "--train-dir", "t_workers", "--eval-dir", "e", "--validate-dir", "v", "--split-dir", "s",
             "--out", "model", "--params", "params.yaml"], d)
    assert "parity gap" in e.stdout and (d / "model").is_dir(), e.stdout
