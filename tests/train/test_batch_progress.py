"""The batch loop's console (reid_train.reporting.BatchProgress): the epoch's mean loss terms
and a log line every log_every iterations with the running means."""

from __future__ import annotations

import pytest
import torch

from reid_train.reporting import Reporter


class _Seen(Reporter):
    def __init__(self) -> None:
        super().__init__(is_main=True)
        self.lines: list[tuple] = []

    def iteration(self, epoch, step, iters, means, lr, images_per_s) -> None:  # noqa: ANN001
        self.lines.append((epoch, step, iters, means, lr, images_per_s > 0))


def test_means_and_log_lines_every_log_every_iterations() -> None:
    report = _Seen()
    progress = report.batches(range(4), epoch=3, iters=4, log_every=2, batch_images=16)
    assert list(progress) == [0, 1, 2, 3]
    for step, (ce, tri) in enumerate([(1.0, 0.5), (3.0, 0.5), (2.0, 1.5), (6.0, 1.5)]):
        progress.add(step, {"ce": torch.tensor(ce), "triplet": torch.tensor(tri)}, lr=0.1)
    assert progress.means() == {"ce": 3.0, "triplet": 1.0}
    # after iterations 2 and 4: the running means so far
    assert report.lines == [
        (3, 1, 4, {"ce": 2.0, "triplet": 0.5}, 0.1, True),
        (3, 3, 4, {"ce": 3.0, "triplet": 1.0}, 0.1, True),
    ]


@pytest.mark.parametrize("every", [0, 5])
def test_no_log_line_when_not_due(every: int) -> None:
    report = _Seen()
    progress = report.batches([0, 1], epoch=0, iters=2, log_every=every, batch_images=8)
    for step in progress:
        progress.add(step, {"ce": torch.tensor(1.0)}, lr=0.1)
    assert report.lines == [] and progress.means() == {"ce": 1.0}
