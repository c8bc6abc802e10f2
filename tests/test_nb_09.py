"""Notebook 09 (depth from video) runs headless: view synthesis, the scale ambiguity, the auto-mask, training."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


def test_notebook_09_warps_frames_shows_the_scale_ambiguity_and_trains_depth_from_video(execute_notebook,
                                                                                         notebook_outputs) -> None:
    metrics, _ = execute_notebook("09_depth_from_video")
    warp = metrics["warp_errors"]  # what the lesson's prose says of the three geometries
    assert warp["true depth and pose"] < warp["depth x 1.5"] and warp["true depth and pose"] < warp["wrong pose"]
    depth_only, with_translation = (metrics["scale_curves"][key] for key in
                                    ("depth scaled by k", "depth and translation scaled by k"))
    assert max(with_translation) - min(with_translation) < 1e-3  # flat: the scale is invisible
    assert min(depth_only) == pytest.approx(depth_only[2], abs=1e-6) and max(depth_only) > depth_only[2] + 0.005
    assert metrics["automask_kept"]["still"] < metrics["automask_kept"]["moving"]
    assert set(metrics["results"]) == {"untrained DenseMTL", "MTL", "DenseMTL"}
    for result in metrics["results"].values():
        assert 0 < result["depth"]["abs_rel"] and 0 <= result["semseg"]["mIoU"] <= 100
    figures = {path.name for path in (notebook_outputs / "09_depth_from_video" / "figures").iterdir()}
    assert {"sequence.png", "view_synthesis.png", "scale_ambiguity.png", "automask.png", "learning_curves.png",
            "predictions.png", "results.png"} <= figures
