"""Every kind of bad sweep input stops with one clear message naming file, key and what is allowed."""
from __future__ import annotations

import copy

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec import load_spec, parse_rewind


def _error(write_sweep, sweep, overrides=None) -> SpecError:
    path = write_sweep(sweep)
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return info.value


def _set(sweep, dotted, value):
    sweep = copy.deepcopy(sweep)
    node = sweep
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return sweep


def test_valid_sweep_loads(write_sweep, sweep_dict):
    spec = load_spec(write_sweep(sweep_dict))
    assert spec.pruning.rate == 0.2 and spec.pruning.scope == "global" and not spec.pruning.one_shot
    assert spec.eval_recipe == spec.recipes["labels"]


def test_yaml_syntax_error_names_line(write_sweep):
    error = _error(write_sweep, "name: x\nseeds: [0, 1\n")
    assert "YAML syntax error" in str(error) and "line" in str(error)


def test_top_level_must_be_mapping(write_sweep):
    assert "mapping" in str(_error(write_sweep, "- 1\n- 2\n"))


@pytest.mark.parametrize("dotted,allowed_word", [
    ("bogus", "workspace"),
    ("pruning.bogus", "fractions"),
    ("recipes.labels.bogus", "batch_size"),
    ("recipes.labels.schedule.bogus", "milestones"),
])
def test_unknown_keys_list_what_is_allowed(write_sweep, sweep_dict, dotted, allowed_word):
    error = _error(write_sweep, _set(sweep_dict, dotted, 1))
    assert error.key_path == dotted
    assert "unknown key" in error.problem and allowed_word in error.problem


@pytest.mark.parametrize("dotted,value,key_path", [
    ("seeds", "zero", "seeds"),
    ("recipes.labels.epochs", "ten", "recipes.labels.epochs"),
    ("recipes.labels.epochs", 0, "recipes.labels.epochs"),
    ("recipes.labels.lr", -0.1, "recipes.labels.lr"),
    ("pruning.rate", 1.0, "pruning.rate"),
    ("pruning.one_shot", "maybe", "pruning.one_shot"),
    ("recipes.labels.optimizer", "lbfgs", "recipes.labels.optimizer"),
    ("seeds", [0, -1], "seeds[1]"),
    ("seeds", [1, 1], "seeds"),
])
def test_wrong_types_and_values(write_sweep, sweep_dict, dotted, value, key_path):
    assert _error(write_sweep, _set(sweep_dict, dotted, value)).key_path == key_path


def test_layer_wise_pruning_beyond_the_network_is_refused_at_plan(write_sweep, sweep_dict):
    error = _error(write_sweep, _set(sweep_dict, "pruning.layers", 5))  # small_cnn has 4 convolutions
    assert error.key_path == "pruning.layers" and "1..4" in error.problem
    assert load_spec(write_sweep(_set(sweep_dict, "pruning.layers", 4))).pruning.layers == 4


@pytest.mark.parametrize("fractions,key_path", [
    ([0.5, 0], "pruning.fractions[1]"),
    ([1.5], "pruning.fractions[0]"),
    ([-0.1], "pruning.fractions[0]"),
])
def test_fractions_outside_unit_interval(write_sweep, sweep_dict, fractions, key_path):
    error = _error(write_sweep, _set(sweep_dict, "pruning.fractions", fractions))
    assert error.key_path == key_path and "(0, 1]" in error.problem


@pytest.mark.parametrize("point", ["-1ep", "3 epochs", "abc", 5, -3, "1.5ep"])
def test_unparsable_or_negative_rewind_points(write_sweep, sweep_dict, point):
    error = _error(write_sweep, _set(sweep_dict, "rewind", [point]))
    assert error.key_path == "rewind[0]" and "allowed" in error.problem


def test_rewind_point_beyond_training(write_sweep, sweep_dict):
    error = _error(write_sweep, _set(sweep_dict, "rewind", [0, "3ep"]))
    assert error.key_path == "rewind[1]" and "beyond" in error.problem


def test_rewind_spellings():
    assert parse_rewind(0).text == "0" and parse_rewind("0ep").text == "0"
    assert parse_rewind("500it").iterations(11) == 500
    assert parse_rewind("2ep").iterations(11) == 22


@pytest.mark.parametrize("dotted,value,key_path", [
    ("mask_source", ["labels", "jigsaw"], "mask_source[1]"),
    ("init", ["lottery"], "init[0]"),
    ("dataset.name", "imagenet-1k", "dataset.name"),
    ("arch.name", "vgg1000", "arch.name"),
])
def test_unknown_registry_names(write_sweep, sweep_dict, dotted, value, key_path):
    error = _error(write_sweep, _set(sweep_dict, dotted, value))
    assert error.key_path == key_path and "allowed" in error.problem


@pytest.mark.parametrize("axis", ["seeds", "mask_source", "init", "rewind", "pruning.fractions"])
def test_empty_grid_axes(write_sweep, sweep_dict, axis):
    assert _error(write_sweep, _set(sweep_dict, axis, [])).key_path == axis


def test_missing_required_recipe(write_sweep, sweep_dict):
    del sweep_dict["recipes"]["rotnet"]
    assert "recipes.rotnet" in _error(write_sweep, sweep_dict).problem


def test_missing_key(write_sweep, sweep_dict):
    del sweep_dict["dataset"]
    error = _error(write_sweep, sweep_dict)
    assert error.key_path == "dataset" and "missing" in error.problem


def test_milestone_beyond_epochs(write_sweep, sweep_dict):
    sweep = _set(sweep_dict, "recipes.labels.schedule", {"kind": "step", "milestones": [5]})
    assert _error(write_sweep, sweep).key_path == "recipes.labels.schedule.milestones[0]"


def test_overrides_apply_and_validate(write_sweep, sweep_dict):
    path = write_sweep(sweep_dict)
    spec = load_spec(path, ["seeds=[0,1,2]", "pruning.rate=0.5", "recipes.labels.schedule.kind=cosine"])
    assert spec.seeds == [0, 1, 2] and spec.pruning.rate == 0.5
    assert spec.recipes["labels"].schedule.kind == "cosine"
    for override, key_path in [("pruning.rate=1.5", "pruning.rate"), ("pruning.bogus=1", "pruning.bogus"),
                               ("seeds=[a", "seeds"), ("noequals", "noequals"), ("seeds.x=1", "seeds")]:
        with pytest.raises(SpecError) as info:
            load_spec(path, [override])
        assert info.value.key_path == key_path, override
        assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such sweep file"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("dotted,value,key_path,needle", [
    ("slurm.bogus", 1, "slurm.bogus", "cpus_per_task"),
    ("slurm.time_min", {"dense": -5}, "slurm.time_min.dense", "positive"),
    ("slurm.time_min", {"training": 5}, "slurm.time_min.training", "allowed: dense"),
    ("slurm.cpus_per_task", 0, "slurm.cpus_per_task", "greater than 0"),
    ("slurm.mem_gb", -1, "slurm.mem_gb", "greater than 0"),
    ("slurm.partition", "gpu\n#SBATCH --qos=high", "slurm.partition", "one line"),
    ("slurm.setup", ["module load cuda", "echo a\nrm -rf ~"], "slurm.setup[1]", "one shell line"),
    ("slurm.extra_sbatch", {"mail-type": "FAIL\necho owned"}, "slurm.extra_sbatch.mail-type", "one line"),
    ("slurm.extra_sbatch", {"--mail-type": "FAIL"}, "slurm.extra_sbatch.--mail-type", "without the leading"),
    ("slurm.extra_sbatch", {"dependency": "afterok:1"}, "slurm.extra_sbatch.dependency", "sets --dependency"),
    ("slurm.extra_sbatch", {"partition": "gpu"}, "slurm.extra_sbatch.partition", "own keys"),
    ("slurm.submit_timeout_s", 0, "slurm.submit_timeout_s", "greater than 0"),
    ("slurm.ranks", {"evl": {"nodes": 1}}, "slurm.ranks.evl", "allowed: dense"),
    ("slurm.ranks", {"eval": {"nodes": 0}}, "slurm.ranks.eval.nodes", "greater than or equal to 1"),
    ("slurm.ranks", {"eval": {"tasks": 2}}, "slurm.ranks.eval.tasks", "allowed here: nodes, tasks_per_node"),
    ("slurm.stages_per_job", {"eval": 0}, "slurm.stages_per_job.eval", ">= 1"),
    ("slurm", {"ranks": {"eval": {"tasks_per_node": 2}}, "stages_per_job": {"eval": 2}},
     "slurm.stages_per_job.eval", "distributed"),
])
def test_bad_slurm_settings(write_sweep, sweep_dict, dotted, value, key_path, needle):
    error = _error(write_sweep, _set(sweep_dict, dotted, value))
    assert error.key_path == key_path and needle in error.problem, str(error)


def test_slurm_settings_keep_their_types(write_sweep, sweep_dict):
    sweep = _set(sweep_dict, "slurm", {"extra_sbatch": {"hold": True, "nice": 10, "mail-type": "FAIL"},
                                        "setup": ["source ~/venv/bin/activate"], "time_min": {"imp": 30}})
    slurm = load_spec(write_sweep(sweep)).slurm
    assert slurm.extra_sbatch == {"hold": True, "nice": 10, "mail-type": "FAIL"}
    assert slurm.time_min == {"imp": 30} and slurm.default_time_min == 60


def test_absent_sections_are_their_validated_defaults(sweep_dict):
    """Absent sections are made without validation (no validator of their own is built while
    planning): they must equal, and dump as, the same sections validated from nothing."""
    from orchestrator.backends import BACKENDS, settings_model
    from orchestrator.backends.ray.settings import RayResources, RayRuntimeEnv, RayStageResources
    from orchestrator.spec import LabelSubset, Schedule, validate_spec

    spec = validate_spec(sweep_dict, "test.yaml")
    made = {"label_subset": spec.label_subset, "schedule": spec.recipes["labels"].schedule,
            **{name: getattr(spec, name) for name in BACKENDS}}
    validated = {"label_subset": LabelSubset.model_validate({}), "schedule": Schedule.model_validate({}),
                 **{name: settings_model(name).model_validate({}) for name in BACKENDS}}
    assert made == validated
    assert {key: section.model_dump() for key, section in made.items()} == \
           {key: section.model_dump() for key, section in validated.items()}
    for model in (RayResources, RayStageResources, RayRuntimeEnv):
        assert model.model_construct() == model.model_validate({})


_NPID = {"epochs": 2, "batch_size": 128, "optimizer": "sgd", "lr": 0.03}


@pytest.mark.parametrize("changes,key_path,needle", [
    ({"recipes.labels.negatives": 16384}, "recipes.labels.negatives", "a setting of the recipes of npid only"),
    ({"recipes.rotnet.negatives": 16384}, "recipes.rotnet.negatives", "a setting of the recipes of npid only"),
    ({"recipes.labels.batch_counts": "images"}, "recipes.labels.batch_counts",
     "recipes of rotnet, exemplar, s4l only; task labels does not read it"),
    ({"recipes.eval": {**_NPID, "negatives": 5}}, "recipes.eval.negatives", "npid only"),
    ({"recipes.rotnet.batch_counts": "rows"}, "recipes.rotnet.batch_counts", "'images' or 'samples', got 'rows'"),
    ({"recipes.rotnet.batch_counts": "samples", "recipes.rotnet.batch_size": 130}, "recipes.rotnet.batch_size",
     "with batch_counts: samples, must be a multiple of the 4 samples rotnet makes of each image, got 130"),
    ({"mask_source": ["labels", "npid"], "recipes.npid": {**_NPID, "negatives": 0}}, "recipes.npid.negatives",
     "greater than 0"),
    ({"transfer": {"dataset": {"name": "digits"}, "finetune": {"recipe": {**_NPID, "batch_counts": "images"}}}},
     "transfer.finetune.recipe.batch_counts", "a transfer recipe does not read it"),
    ({"recipes.labels.foo": 1}, "recipes.labels.foo", "allowed here: epochs, batch_size, optimizer, lr, momentum, "
                                                      "nesterov, weight_decay, schedule"),
    ({"recipes.rotnet.foo": 1}, "recipes.rotnet.foo", "weight_decay, schedule, batch_counts"),
    ({"mask_source": ["labels", "npid"], "recipes.npid": {**_NPID, "foo": 1}}, "recipes.npid.foo",
     "weight_decay, schedule, negatives"),
])
def test_task_recipe_options_belong_to_their_tasks(write_sweep, sweep_dict, tmp_path, capsys, changes, key_path,
                                                    needle):
    """``negatives`` (NPID) and ``batch_counts`` (tasks of several samples per image) elsewhere, or
    out of range: exit 2, one line naming the file and the key, nothing written."""
    from orchestrator.cli import main

    sweep = sweep_dict
    for dotted, value in changes.items():
        sweep = _set(sweep, dotted, value)
    path = write_sweep(sweep)
    assert main(["launch", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and f"{key_path}: " in err and needle in err, err
    assert "Traceback" not in err and not (tmp_path / "ws").exists()
