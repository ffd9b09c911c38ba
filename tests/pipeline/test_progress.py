import io

from pipeline.execution.progress import Progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_non_terminal_progress_prints_lines_at_a_bounded_rate():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(total_seeds=1000, stream=out, interval=10.0, clock=clock, tty=False, rows_per_seed=2)
    for seed in range(1000):
        clock.now = seed * 0.05  # 50 s of work, 20 seeds a second
        for axis in ("gender", "race"):
            progress.row({"seed_index": seed, "set_status": "accepted" if seed % 3 else "rejected"})
    progress.finish()
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 7  # one per 10 s of a 50 s run, plus the final one
    assert "\r" not in out.getvalue()
    assert lines[-1].startswith("progress: seeds 1000/1000 (100%) | sets accepted 1332 rejected 668")


def test_terminal_progress_rewrites_one_line_and_reports_eta():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(total_seeds=100, already_done=20, stream=out, clock=clock, tty=True)
    clock.now = 10.0
    for seed in range(20, 40):
        progress.row({"seed_index": seed, "set_status": "accepted"})
    text = out.getvalue()
    assert text.startswith("\r\033[K") and "\n" not in text
    assert "seeds 40/100 (40%)" in progress.line()
    assert "2.00 seeds/s" in progress.line() and "ETA 0m30s" in progress.line()


def test_a_seed_counts_as_done_when_all_its_sets_are_in_whatever_the_order():
    progress = Progress(total_seeds=3, stream=io.StringIO(), tty=False, rows_per_seed=2)
    for seed in (2, 0, 2, 1, 0):  # seed 1 still misses one of its two sets
        progress.row({"seed_index": seed, "set_status": "accepted"})
    assert progress.done == 2
