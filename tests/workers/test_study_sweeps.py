"""Planning and running the study's extra sources, layer-wise pruning and transfer evaluations."""
from __future__ import annotations

import copy
import sqlite3

import pytest

import results
from conftest import TINY
from orchestrator.cli import main
from orchestrator.errors import SpecError
from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import validate_spec

QUICK = {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 0.01}
STUDY = {
    **copy.deepcopy(TINY),
    "name": "study",
    "recipes": {task: dict(QUICK) for task in ("labels", "rotnet", "exemplar", "s4l", "labels_10pct")},
    "pruning": {"fractions": [0.8, 0.64]},
    "mask_source": ["labels", "rotnet", "exemplar", "s4l", "labels_10pct", "random", "adjusted_random"],
    "transfer": {"dataset": {"name": "digits"}, "mask_source": ["rotnet"],
                 "linear": {"recipe": {**QUICK, "epochs": 3}, "metric": "map"},
                 "finetune": {"recipe": QUICK, "compare_prune_during": True}},
}


def _plan(sweep):
    return plan_sweep(validate_spec(copy.deepcopy(sweep), "study.yaml"))


def _stages(plan, kind):
    return [stage for stage in plan.stages.values() if stage.kind == kind]


def test_every_source_plans_and_the_subset_is_part_of_the_subset_tasks_identity():
    plan = _plan(STUDY)
    dense = {stage.config["task"]: stage for stage in _stages(plan, "dense")}
    assert set(dense) == {"labels", "rotnet", "exemplar", "s4l", "labels_10pct"}
    reseeded = _plan({**STUDY, "label_subset": {"seed": 1}})
    again = {stage.config["task"]: stage.key for stage in _stages(reseeded, "dense")}
    assert {t for t in dense if dense[t].key != again[t]} == {"s4l", "labels_10pct"}
    assert dense["s4l"].config["task_options"]["label_subset"]["fraction"] == 0.1
    assert {cell.mask_source for cell in plan.cells} == set(STUDY["mask_source"])


def test_rewinding_in_epochs_of_labels_10pct_counts_the_subsets_steps():
    plan = _plan({**STUDY, "rewind": ["1ep"], "recipes": {**STUDY["recipes"], "labels_10pct": {**QUICK, "batch_size": 64}}})
    imp = next(s for s in _stages(plan, "imp") if s.config["task"] == "labels_10pct")
    assert imp.config["rewind_iteration"] == 3  # 135 labelled digits at batch 64
    labels = next(s for s in _stages(plan, "imp") if s.config["task"] == "labels")
    assert labels.config["rewind_iteration"] == 6  # 1347 digits at batch 256


def test_adjusted_random_masks_read_the_labels_dense_run():
    plan = _plan(STUDY)
    labels_dense = next(s.key for s in _stages(plan, "dense") if s.config["task"] == "labels")
    adjusted = [s for s in _stages(plan, "random_mask") if s.config["mask_rule"]["kind"] == "adjusted_random"]
    plain = [s for s in _stages(plan, "random_mask") if s.config["mask_rule"]["kind"] == "random"]
    assert len(adjusted) == len(plain) == 2
    assert all(s.deps == {"previous": labels_dense} for s in adjusted)
    assert not {s.key for s in adjusted} & {s.key for s in plain}


def test_layer_wise_option_renames_masks_only_when_set():
    base = _plan(STUDY)
    layered = _plan({**STUDY, "pruning": {**STUDY["pruning"], "layers": 2}})
    dense = {s.key for s in _stages(base, "dense")}
    assert dense == {s.key for s in _stages(layered, "dense")}
    assert not {s.key for s in _stages(base, "imp")} & {s.key for s in _stages(layered, "imp")}
    assert all(s.config["mask_rule"]["layers"] == 2 for s in _stages(layered, "imp"))
    assert all(s.config["pruned_layers"] == 2 for s in _stages(layered, "eval"))


def test_transfer_adds_its_own_stages_and_renames_nothing():
    without = _plan({k: v for k, v in STUDY.items() if k != "transfer"})
    plan = _plan(STUDY)
    assert set(without.stages) <= set(plan.stages)
    counts = plan.counts_by_kind()
    # rotnet x 2 fractions: features + linear + finetune + prune-during, and the chain now reaches level 2
    assert (counts["features"], counts["linear_eval"], counts["finetune"]) == (2, 2, 4)
    assert counts["imp"] == without.counts_by_kind()["imp"] + 1
    other_recipe = copy.deepcopy(STUDY)
    other_recipe["transfer"]["linear"]["recipe"]["lr"] = 0.1
    changed = _plan(other_recipe)
    assert {s.key for s in _stages(changed, "features")} == {s.key for s in _stages(plan, "features")}
    assert not {s.key for s in _stages(changed, "linear_eval")} & {s.key for s in _stages(plan, "linear_eval")}
    inits = {(c.init, c.transfer) for c in plan.cells if c.mask_source == "rotnet"}
    assert inits == {("winning_ticket", None), ("reinit", None), ("pretrained", "linear"), ("pretrained", "finetune"),
                     ("pretrained", "finetune_prune_during")}


@pytest.mark.parametrize("change, where, what", [
    ({"transfer": {**STUDY["transfer"], "mask_source": ["random"]}}, "transfer.mask_source[0]",
     "not an IMP mask source"),
    ({"pruning": {"fractions": [0.8], "layers": 0}}, "pruning.layers", "greater than 0"),
    ({"transfer": {"dataset": {"name": "digits"}}}, "transfer", "linear: and/or finetune:"),
    ({"transfer": {**STUDY["transfer"], "linar": {}}}, "transfer.linar", "allowed here: dataset, linear"),
    ({"label_subset": {"kind": "pixels"}}, "label_subset.kind", "images_per_class"),
])
def test_bad_study_sections_name_the_key(change, where, what):
    with pytest.raises(SpecError) as error:
        validate_spec({**copy.deepcopy(STUDY), **change}, "study.yaml")
    assert f"study.yaml: {where}:" in str(error.value) and what in str(error.value)


def test_bad_section_exits_2_from_the_cli(write_sweep, capsys):
    path = write_sweep({**STUDY, "pruning": {"fractions": [0.8], "layers": -1}})
    assert main(["plan", str(path)]) == 2
    assert "pruning.layers" in capsys.readouterr().err


def test_the_study_runs_end_to_end_with_natural_sparsity_and_transfer_rows(write_sweep, tmp_path):
    sweep = {**STUDY, "pruning": {"fractions": [0.8], "layers": 3}}
    path = write_sweep(sweep)
    assert main(["launch", str(path), "--workers", "2", "--no-progress"]) == 0
    df = results.load(tmp_path / "ws")
    assert len(df) == len(_plan(sweep).cells) == 5 * 2 + 2 + 3  # 5 IMP sources x 2 inits, 2 random baselines, 3 rotnet transfers
    trained = df[~df["mask_source"].isin(["random"])]
    assert trained["natural_sparsity"].notna().all() and df[df["mask_source"] == "random"]["natural_sparsity"].isna().all()
    linear = df[df["transfer"] == "linear"]
    assert set(linear["metric"]) == {"map"} and set(linear["eval_dataset"]) == {"digits"}
    assert (df["measured_fraction"] - df["nominal_fraction"]).abs().max() < 0.01  # over the 3 pruned layers
    assert df["top1"].between(0, 1).all()


def test_a_results_table_of_the_first_schema_is_read_and_migrated(tmp_path):
    first = [c for c in results.COLUMNS if c not in ("natural_sparsity", "metric", "eval_dataset", "transfer",
                                                      "map_11point")]
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        conn.execute(f"CREATE TABLE results ({', '.join(first)}, PRIMARY KEY (sweep, mask_source, init, rewind, "
                     "nominal_fraction, seed, stage_key))")
        conn.execute(f"INSERT INTO results VALUES ({', '.join('?' for _ in first)})",
                     ["s", "k", "digits", "cnn", "labels", "reinit", "0", 0, 1, 0.8, 0.8, 0, 0.9, 1, 1.0, "t"])
    old = results.load(tmp_path)
    assert len(old) == 1 and old["natural_sparsity"].isna().all()
    row = {c: v for c, v in old.iloc[0].items() if c != "recorded_at"}
    assert results.record(tmp_path, [{**row, "stage_key": "k2", "natural_sparsity": 0.8}]) == 1
    assert results.load(tmp_path)["natural_sparsity"].tolist()[1] == 0.8


def test_new_sections_leave_an_existing_sweeps_settings_fingerprint_alone(sweep_dict):
    from orchestrator.planning.planner import settings_fingerprint
    from orchestrator.planning.stage_identity import canonical_json

    spec = validate_spec(copy.deepcopy(sweep_dict), "t.yaml")
    before = {"dataset": spec.dataset.model_dump(), "arch": spec.arch.model_dump(),
              "recipes": {n: r.model_dump() for n, r in spec.recipes.items()},
              "pruning": {"rate": 0.2, "scope": "global", "one_shot": False}}
    assert settings_fingerprint(spec) == canonical_json(before)
    layered = validate_spec({**copy.deepcopy(sweep_dict), "pruning": {"fractions": [0.8], "layers": 2}}, "t.yaml")
    assert '"layers":2' in settings_fingerprint(layered)


@pytest.mark.parametrize("kind", ["images_per_class", "classes"])
def test_labelled_subset_size_on_a_folder_is_the_workers_exact_one(kind, tmp_path):
    from data_folders import write_cifar
    from workers.data.datasets import load_split
    from workers.data.label_subset import subset_indices

    root = write_cifar(tmp_path / "cifar", per_batch=50)
    sweep = {**copy.deepcopy(STUDY), "dataset": {"name": "cifar10", "root": str(root)}, "rewind": ["1ep"],
             "mask_source": ["labels_10pct"], "label_subset": {"kind": kind, "fraction": 0.2, "seed": 1}}
    sweep.pop("transfer")
    sweep["recipes"]["labels_10pct"]["batch_size"] = 4
    spec = validate_spec(sweep, "study.yaml")
    labels = load_split(sweep["dataset"]).train_labels
    size = len(subset_indices(labels, kind, 0.2, 1))
    assert spec.labelled_subset_size() == size
    imp = next(s for s in _stages(plan_sweep(spec), "imp"))
    assert imp.config["rewind_iteration"] == -(-size // 4)  # one epoch of the subset at batch 4
    on_digits = {**sweep, "dataset": {"name": "digits"}, "label_subset": {"kind": "classes"}}
    with pytest.raises(SpecError, match=r"rewind\[0\]: .*'<n>it'"):
        validate_spec(on_digits, "study.yaml")
