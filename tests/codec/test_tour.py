import json

from jaxsys.codec.tour import run_stage


def test_tour_stage_quick(tmp_path):
    res = run_stage(tmp_path / "codec", quick=True)
    assert res["ratio"] > 1.2 and 0 < res["over_entropy_pct"] < 2
    data = json.loads((tmp_path / "codec" / "codec.json").read_text())
    assert data["q8_ratio_vs_f32"] > 4
    assert 0 < res["shared_table_over_pooled_pct"] < 0.5 < data["per_layer_tables_over_pooled_pct"]
    assert (tmp_path / "codec" / "codec_table.png").stat().st_size > 1000
