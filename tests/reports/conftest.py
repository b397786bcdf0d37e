import matplotlib
import pytest

from tests.reports.synthetic_grid import make_grid

matplotlib.use("Agg")

# A small grid with everything a report can show: 2 sizes x 2 patches, a block ablation on B/4,
# a sampling-step sweep at the last step, train logs, samples and one learning-rate range test.
SMALL = dict(sizes=("S", "B"), patches=(4, 2), blocks_for="B/4", steps=(500, 1000, 2000), sampling_steps=(16, 64, 250),
             lr_find=True)


@pytest.fixture(scope="session")
def grid(tmp_path_factory):
    return make_grid(tmp_path_factory.mktemp("grid"), **SMALL)


@pytest.fixture(scope="session")
def rendered(grid):
    from reports.render import render_report

    return render_report(grid.path)
