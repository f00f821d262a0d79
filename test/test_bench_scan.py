"""bench_scan: row structure and JSON output on a tiny shape (timings are never asserted)."""
from __future__ import annotations

import json

from rainmamba_core.bench import scan as bench_scan


def test_benchmark_rows() -> None:
    shapes = [{'name': 'toy', 'B': 1, 'D': 4, 'L': 40, 'N': 2}]
    rows = bench_scan.benchmark_scan_backends(shapes, repeats=1, loop_prefix=16)
    assert [r['backend'] for r in rows] == list(bench_scan.BACKENDS)
    loop = next(r for r in rows if r['backend'] == 'loop')
    assert 'scaled' in loop['note'] and loop['speedup_vs_loop'] == 1.0  # prefix timing is documented
    for r in rows:
        assert r['name'] == 'toy' and (r['ms'] is None or (r['ms'] > 0 and r['gflops'] > 0))


def test_main_prints_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / 'scan.json'
    assert bench_scan.main(['--repeats', '1', '--shape', '1,4,24,2', '--backends', 'ref,chunked',
                            '--json', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'GFLOP/s' in printed and 'chunked' in printed
    rows = json.loads(out.read_text())
    assert [(r['backend'], r['L']) for r in rows] == [('ref', 24), ('chunked', 24)]


def test_streaming_section_times_the_flip_ensemble_beside_streaming() -> None:
    # Row structure only (timings are never asserted): the bundled model at a tiny size.
    from rainmamba_core.bench import bench_stream_vs_window
    row, = bench_stream_vs_window(None, [(32, 40)], frames=1, window=2)
    assert row['size'] == '40x32' and row['window'] == 2
    assert all(row[k] > 0 for k in ('streaming_ms', 'windowed_ms', 'flip_ensemble_ms'))
    assert row['flip_ratio'] == row['flip_ensemble_ms'] / row['streaming_ms']
    assert row['ratio'] == row['windowed_ms'] / row['streaming_ms']
