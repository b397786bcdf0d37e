"""Each figure draws one line (or point) per run with the right points, from a synthetic table."""
import numpy as np
import pytest

from reports import figures as F
from reports import rundirs
from reports.table import NoData

MAIN_RUNS = ["DiT-S/4", "DiT-S/2", "DiT-B/4", "DiT-B/2"]
ABLATIONS = ["DiT-B/4-adaln", "DiT-B/4-cross-attn", "DiT-B/4-in-context"]


def data_lines(ax):
    """Lines that carry data (legend proxies are not added to the axes)."""
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_metric_vs_steps_one_line_per_run_with_every_step(grid):
    (ax,) = F.plot_metric_vs_steps(grid.df, "fid").axes
    lines = data_lines(ax)
    assert sorted(lines) == sorted(MAIN_RUNS + ABLATIONS)
    for run, line in lines.items():
        rows = grid.df[(grid.df["run"] == run) & (grid.df["sampling_steps"] == 250)].sort_values("step")
        np.testing.assert_array_equal(line.get_xdata(), rows["step"].to_numpy(float))
        np.testing.assert_allclose(line.get_ydata(), rows["fid"].to_numpy(float))


def test_any_metric_by_name_and_its_alias(grid):
    (ax,) = F.plot_metric_vs_steps(grid.df, "is").axes
    line = data_lines(ax)["DiT-B/2"]
    rows = grid.df[(grid.df["run"] == "DiT-B/2") & (grid.df["sampling_steps"] == 250)].sort_values("step")
    np.testing.assert_allclose(line.get_ydata(), rows["inception_score"].to_numpy(float))
    assert ax.get_ylabel() == "Inception Score"


def test_metric_vs_gflops_one_point_per_model_and_pearson_r(grid):
    fig = F.plot_metric_vs_gflops(grid.df, "fid")
    (ax,) = [a for a in fig.axes if a.get_lines()]
    lines = data_lines(ax)
    assert sorted(lines) == sorted(MAIN_RUNS)  # ablation variants are not models of the scaling figure
    assert all(len(line.get_xdata()) == 1 for line in lines.values())
    assert ax.get_xscale() == "log"
    last = grid.df[(grid.df["step"] == 2000) & (grid.df["sampling_steps"] == 250) & (grid.df["block"] == "adaln-zero")]
    r = np.corrcoef(np.log10(last["gflops"].to_numpy(float)), last["fid"].to_numpy(float))[0, 1]
    assert f"Pearson r = {r:.3f}" in " ".join(t.get_text() for t in ax.texts)


def test_metric_vs_gflops_at_a_chosen_step(grid):
    (ax,) = F.plot_metric_vs_gflops(grid.df, "fid", step=500).axes
    expected = grid.df[(grid.df["step"] == 500) & (grid.df["run"] == "DiT-S/2")]["fid"].item()
    assert data_lines(ax)["DiT-S/2"].get_ydata()[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="no run was evaluated at step 123"):
        F.plot_metric_vs_gflops(grid.df, "fid", step=123)


def brute_force_frontier(compute, fid):
    """Points that no point of no more compute beats: checked pairwise, O(n^2)."""
    keep = []
    for i in range(len(compute)):
        beaten = any(compute[j] <= compute[i] and fid[j] < fid[i] for j in range(len(compute)) if j != i)
        keep.append(not beaten)
    return np.array(keep)


def test_metric_vs_train_compute_lines_and_frontier(grid):
    (ax,) = F.plot_metric_vs_train_compute(grid.df, "fid").axes
    lines = data_lines(ax)
    assert sorted(lines) == sorted(MAIN_RUNS + ABLATIONS + ["compute-efficient frontier"])
    main = grid.df[grid.df["sampling_steps"] == 250]
    compute, fid = main["train_compute_gflops"].to_numpy(float), main["fid"].to_numpy(float)
    assert ax.get_xscale() == "log"
    assert ax.get_yscale() == ("log" if fid.max() / fid.min() > 3 else "linear")  # no log axis without ticks in range
    keep = brute_force_frontier(compute, fid)
    order = np.argsort(compute[keep])
    frontier = lines["compute-efficient frontier"]
    np.testing.assert_allclose(frontier.get_xdata(), compute[keep][order])
    np.testing.assert_allclose(frontier.get_ydata(), fid[keep][order])


def test_metric_vs_sampling_compute_one_line_per_run_over_step_counts(grid):
    (ax,) = F.plot_metric_vs_sampling_compute(grid.df, "fid").axes
    lines = data_lines(ax)
    assert sorted(lines) == sorted(MAIN_RUNS + ABLATIONS)
    line = lines["DiT-B/2"]
    rows = grid.df[(grid.df["run"] == "DiT-B/2") & (grid.df["step"] == 2000)].sort_values("sampling_steps")
    np.testing.assert_allclose(line.get_xdata(), rows["gflops"].to_numpy(float) * np.array([16, 64, 250]))


def test_sampling_compute_needs_several_step_counts(grid):
    single = grid.df[grid.df["sampling_steps"] == 250]
    with pytest.raises(NoData, match="one sampling step count"):
        F.plot_metric_vs_sampling_compute(single, "fid")


def test_block_ablation_one_line_per_block(grid):
    fig = F.plot_block_ablation(grid.df, "fid")
    (ax,) = fig.axes
    assert sorted(data_lines(ax)) == ["adaln", "adaln-zero", "cross-attn", "in-context"]
    assert all(len(line.get_xdata()) == len(grid.steps) for line in data_lines(ax).values())
    with pytest.raises(NoData, match="more than one conditioning block"):
        F.plot_block_ablation(grid.df[grid.df["block"] == "adaln-zero"], "fid")


def test_metrics_panel_has_one_axes_per_metric_with_values(grid):
    df = grid.df.assign(sfid=np.nan)
    fig = F.plot_metrics_vs_train_compute(df)
    drawn = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title() for ax in drawn] == ["FID", "Inception Score", "Precision", "Recall"]
    assert all(len(data_lines(ax)) == len(MAIN_RUNS + ABLATIONS) for ax in drawn)


def test_training_curves_one_line_per_run_in_each_panel(grid):
    logs = {name: rundirs.read_train_log(path) for name, path in rundirs.run_dirs(grid.path).items()}
    fig = F.plot_training_curves(logs)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "mse", "vb"]
    for ax in fig.axes:
        assert len(data_lines(ax)) == len(logs)
        assert all(len(line.get_xdata()) == 40 for line in data_lines(ax).values())


def test_sample_grid_and_strip_show_one_image_each(grid):
    images = [(name, *rundirs.sample_images(path)[-1], None) for name, path in rundirs.run_dirs(grid.path).items()]
    fig = F.plot_sample_grids(images)
    assert sum(len(ax.get_images()) for ax in fig.axes) == len(MAIN_RUNS + ABLATIONS)
    strip = F.plot_sample_strip("DiT-B/2", rundirs.sample_images(grid.path / "runs" / "DiT-B-2"))
    assert [ax.get_title() for ax in strip.axes] == ["step 500", "step 1,000", "step 2,000"]


def test_sample_grid_labels_each_class_column(grid):
    name, path = next(iter(rundirs.run_dirs(grid.path).items()))
    step, png = rundirs.sample_images(path)[-1]
    fig = F.plot_sample_grids([(name, step, png, 10)])
    ax = next(ax for ax in fig.axes if ax.get_images())
    width = ax.get_images()[0].get_array().shape[1]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in range(10)]
    np.testing.assert_allclose(ax.get_xticks(), [(c + 0.5) * width / 10 for c in range(10)])
    unlabelled = F.plot_sample_grids([(name, step, png, None)])
    assert not any(ax.axison for ax in unlabelled.axes)


def test_preview_classes_read_from_the_run_config(tmp_path):
    import json

    def write(num_classes, sample_images):
        (tmp_path / "config.json").write_text(json.dumps(
            {"model": {"num_classes": num_classes}, "train": {"sample_images": sample_images}}))
        return rundirs.preview_classes(tmp_path)

    assert rundirs.preview_classes(tmp_path) is None  # no config
    assert write(10, 16) == 10
    assert write(10, 4) == 4  # fewer images than classes: one column each
    assert write(1000, 16) is None  # ImageNet's previews mix classes on a square grid


def test_strip_steps_spread_from_first_to_last():
    assert F.strip_steps(list(range(0, 100, 10)), 4) == [0, 30, 60, 90]
    assert F.strip_steps([1, 2], 8) == [1, 2]


def test_paper_overlay_draws_paper_and_grid_points(grid):
    from reports.paper import paper_table

    paper = paper_table("fid_400k")
    points = grid.df[
        (grid.df["step"] == 2000) & (grid.df["sampling_steps"] == 250) & (grid.df["block"] == "adaln-zero")
    ]
    fig = F.plot_paper_overlay(points.rename(columns={"fid": "value"}), paper, "FID", "this grid")
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 12 + 4


@pytest.mark.parametrize("figure", [F.plot_metric_vs_steps, F.plot_metric_vs_gflops, F.plot_metric_vs_train_compute])
def test_unknown_metric_names_the_choices(grid, figure):
    with pytest.raises(ValueError, match="unknown metric 'fdi'; choose one of fid, sfid, inception_score"):
        figure(grid.df, "fdi")


def test_missing_column_is_named(grid):
    with pytest.raises(
        ValueError, match="no column 'train_compute_gflops', which the FID-vs-training-compute figure needs"
    ):
        F.plot_metric_vs_train_compute(grid.df.drop(columns="train_compute_gflops"), "fid")


def test_lr_range_test_figure_marks_the_suggestion():
    from reports.lr_find import plot_lr_range_test

    lrs = list(np.geomspace(1e-6, 1.0, 30))
    loss = [1.0 - 0.02 * i for i in range(25)] + [float("inf")] * 5
    result = dict(lr=lrs, loss=loss, smoothed=[min(v, 2.0) for v in loss], suggested_lr=1e-3, min_loss_lr=1e-2,
                  diverged_lr=0.3)
    (ax,) = plot_lr_range_test(result).axes
    assert [line.get_label() for line in ax.get_lines()] == [
        "loss", "smoothed loss", "suggested max lr 1.0e-03", "lowest loss at 1.0e-02", "diverged at 3.0e-01"]
    assert len(ax.get_lines()[0].get_xdata()) == 25  # the diverged (infinite) losses are left out


def test_paper_overlay_keeps_incomparable_numbers_in_separate_panels(grid):
    from reports.paper import paper_table

    paper = paper_table("fid_400k")
    points = grid.df[
        (grid.df["step"] == 2000) & (grid.df["sampling_steps"] == 250) & (grid.df["block"] == "adaln-zero")
    ]
    fig = F.plot_paper_overlay(points.rename(columns={"fid": "value"}), paper, "mnist-feature FID", "this grid",
                               separate=True)
    left, right = fig.axes
    assert len(left.get_lines()) == 12 and len(right.get_lines()) == 4
    assert sorted(y for line in left.get_lines() for y in line.get_ydata()) == sorted(paper["fid"])
