import pytest

from tuner.candidate import Candidate
from tuner.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    c = Candidate(
        prune_ratio=0.3, precision="int8", fold_bn=True, graph_opt="basic", batch_size=8, placement="ort-cpu", threads=1
    )
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(c.to_dict()))
    assert Candidate.from_yaml(path) == c


def test_defaults_are_the_plain_model():
    c = Candidate()
    assert (c.prune_ratio, c.precision, c.placement, c.batch_size) == (0.0, "fp32", "torch-cpu", 1)


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("prune_ratio", 1.0, "0 <= prune_ratio < 1"),
        ("prune_ratio", -0.1, "0 <= prune_ratio < 1"),
        ("precision", "int4", "precision must be one of"),
        ("graph_opt", "max", "graph_opt must be one of"),
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("batch_size", True, "batch_size must be an integer >= 1"),
        ("placement", "tpu", "placement must be one of"),
        ("threads", -1, "threads must be an integer >= 0"),
        ("fold_bn", "yes", "fold_bn must be true or false"),
        ("streams", 0, "streams must be an integer >= 1"),
        ("streams", 1.5, "streams must be an integer >= 1"),
        ("requests", -1, "requests must be 0"),
        ("requests", 10**6, "requests must be an integer <= 1024"),
    ],
)
def test_invalid_values_are_named(field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        Candidate(**{field: value})


def test_unknown_key_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key.*prune"):
        Candidate.from_dict({"prune": 0.5})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Candidate.from_yaml(bad)
    bad.write_text("precision: [fp32\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        Candidate.from_yaml(bad)


def test_serving_defaults_are_one_call_at_a_time():
    c = Candidate()
    assert (c.streams, c.requests, c.in_flight) == (1, 0, 1)
    assert Candidate(streams=2).in_flight == 2 and Candidate(streams=2, requests=4).in_flight == 4
    assert Candidate(streams=2, threads=1, batch_size=4).serving == {
        "streams": 2,
        "requests": 2,
        "batch_size": 4,
        "threads": 1,
    }
    # A candidate recorded before the serving keys existed reads as one call at a time.
    old = {k: v for k, v in c.to_dict().items() if k not in ("streams", "requests")}
    assert Candidate.fill(old) == c.to_dict() and Candidate(**old) == c
