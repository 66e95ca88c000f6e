"""The charter document: schema validation with the line named, deny by default, plain-language text."""

from __future__ import annotations

import pytest

from datacharter.charter import DEFAULT_PATH, Charter, CharterError
from datacharter.explain import explain
from datacharter.noise import laplace_scale, spent_epsilon

TEXT = DEFAULT_PATH.read_text()


def test_the_shipped_charter_is_valid_and_covers_the_published_categories():
    c = Charter.load()
    assert c.version == "2026.12.0"
    assert {
        "air_quality",
        "mobile_air_quality",
        "noise",
        "traffic",
        "parking",
        "pedestrian_flow",
        "energy",
        "energy_profiles",
    } <= set(c.datasets)
    assert "gateway_health" not in c.datasets  # deny by default: health data is never published
    assert c.retention_s == {"raw": 30 * 86400, "pseudonymous": 48 * 3600}


@pytest.mark.parametrize(
    ("old", "new", "line_of", "message"),
    [
        (
            "    k: 10                       # the Dutch",
            "    k: 0  # the Dutch",
            "    k: 0  # the Dutch",
            "greater than or equal to 1",
        ),
        (
            "      pm2_5: [mean, min, max, p50, p90]",
            "      pm2_5: [mean, median]",
            "      pm2_5: [mean, median]",
            "Input should be",
        ),
        (
            "      laeq: [energy_mean, min, max, p10, p90]",
            "      laeq: [energy_mean]\n      imei: [mean]",
            "      imei: [mean]",
            "not a quantity of the vocabulary",
        ),
        (
            "    time: {bin: 1h, roll_up: [1d]}\n    k: 3",
            "    time: {bin: 7m, roll_up: [1d]}\n    k: 3",
            "    time: {bin: 7m, roll_up: [1d]}",
            "must divide a day",
        ),
        ("  raw: 30d ", "  raw: forever ", "  raw: forever ", "is not a duration"),
        (
            "    noise: {epsilon_per_day: 1.0,",
            "    noise: {epsilon_per_day: -1.0,",
            "    noise: {epsilon_per_day: -1.0,",
            "greater than 0",
        ),
    ],
)
def test_an_invalid_charter_is_refused_naming_the_line(old, new, line_of, message):
    assert old in TEXT
    bad = TEXT.replace(old, new, 1)
    with pytest.raises(CharterError) as info:
        Charter.parse(bad)
    line = bad.splitlines().index(next(ln for ln in bad.splitlines() if ln.startswith(line_of))) + 1
    assert f"<charter>:{line}:" in str(info.value)
    assert message in str(info.value)


def test_unknown_keys_and_broken_yaml_are_refused():
    with pytest.raises(CharterError, match=r"<charter>:\d+: datasets.noise.publish_raw: Extra inputs"):
        Charter.parse(
            TEXT.replace(
                "  noise:\n    title: Noise levels", "  noise:\n    publish_raw: true\n    title: Noise levels", 1
            )
        )
    with pytest.raises(CharterError, match=r"<charter>:4: not valid YAML"):
        Charter.parse("version: 1\ntitle: x\ndatasets: [a\n")
    with pytest.raises(CharterError, match="must be a mapping"):
        Charter.parse("- a\n")


def test_methods_refuse_rules_they_cannot_honour():
    noise_section = TEXT[TEXT.index("  noise:\n") : TEXT.index("  traffic:\n")]
    noisy_levels = noise_section.replace(
        "    k: 1\n", "    k: 1\n    noise: {epsilon_per_day: 1, max_bins_per_subject_per_day: 2}\n", 1
    )
    with pytest.raises(CharterError, match="noise applies to counts of people only"):
        Charter.parse(TEXT.replace(noise_section, noisy_levels))
    with pytest.raises(CharterError, match="roll_up resolutions must be coarser"):
        Charter.parse(TEXT.replace("space: {resolution: 9, roll_up: [8]}", "space: {resolution: 9, roll_up: [10]}"))
    # a dataset about people may not re-publish a closed day: the difference would reveal the late subjects
    energy = TEXT[TEXT.index("  energy:\n") : TEXT.index("  energy_profiles:\n")]
    with pytest.raises(CharterError, match="late_data: reprocess would re-release groups about people"):
        Charter.parse(TEXT.replace(energy, energy.replace("    k: 10", "    late_data: reprocess\n    k: 10", 1)))


def test_noise_calibration_spends_exactly_the_daily_budget():
    c = Charter.load()
    n = c.datasets["pedestrian_flow"].noise
    contributions = n.max_bins_per_subject_per_day * len(c.datasets["pedestrian_flow"].levels)
    scale = laplace_scale(n.epsilon_per_day, n.max_bins_per_subject_per_day, len(c.datasets["pedestrian_flow"].levels))
    assert scale == c.datasets["pedestrian_flow"].noise_scale
    assert spent_epsilon(scale, contributions) == pytest.approx(n.epsilon_per_day)
    assert spent_epsilon(scale / 2, contributions) == pytest.approx(2 * n.epsilon_per_day)
    # with a roll-up level the same budget needs twice the scale: rows not published at the first level are
    # noised again at the second
    assert laplace_scale(n.epsilon_per_day, n.max_bins_per_subject_per_day, 2) == 2 * laplace_scale(
        n.epsilon_per_day, n.max_bins_per_subject_per_day, 1
    )


def test_explain_speaks_plainly_about_every_dataset():
    c = Charter.load()
    text = explain(c)
    for name, ds in c.datasets.items():
        assert f"(dataset '{name}')" in text
        assert ds.purpose in text
    flows = explain(c, "pedestrian_flow")
    assert "at least 10 different phones" in flows
    assert "2 days" in flows  # the pseudonymous retention
    assert "epsilon 1 per phone" in flows
    assert "76 m" in flows and "1 hour" in flows
    assert "published once, after it has ended" in flows
    assert "Not published: gateway and sensor health" in text
    with pytest.raises(KeyError):
        explain(c, "gateway_health")


def test_explain_says_every_rule_of_the_second_attack_round():
    c = Charter.load()
    texts = {name: explain(c, name) for name in c.datasets}
    for name, text in texts.items():
        assert "  Which sensors: only registered " in text, name
        assert "  Protects against: " in text and "  Does not protect against: " in text, name
        if c.datasets[name].about_people:
            assert "No minimum or maximum is published" in text or "Statistics over vehicles" in text, name
    # placement: the k = 1 environment datasets read public-space sensors only, and say what is left
    for name in ("air_quality", "weather", "noise"):
        assert "placed in the street (public space). Sensors on private premises or indoors" in texts[name]
        assert "they are never read for this dataset" in texts[name]
        assert "single public-space sensors (k = 1)" in texts[name]
    energy = texts["energy"]
    assert "on private premises" in energy and "indoors" in energy
    assert "never publishes fewer than 10 grid connections together" in energy
    # magnitude rules per data owner
    assert "at least 3 different owners" in energy and "more than 50% of it" in energy
    assert "could estimate another owner's to within 10%" in energy
    assert "a block manager reading his own meter" in energy
    # one release with the profiles
    assert "One release with 'energy_profiles'" in energy
    assert "One release with 'energy'" in texts["energy_profiles"]
    # shapes only
    profiles = texts["energy_profiles"]
    assert "Shapes only" in profiles and "no kW or kWh is published" in profiles
    assert "at least 10 meters to a group" in profiles and "median of each hour" in profiles
    assert "moves the median at most to its neighbours' values" in profiles
    # vehicles counted, statistics over contributors, the residual of a group of 3
    mobile = texts["mobile_air_quality"]
    assert "k counts vehicles (trackers on the same vehicle count once)" in mobile
    assert "from the second smallest to the second largest" in mobile and "No minimum or maximum" in mobile
    assert "in a group of only 3 vehicles the median is the middle vehicle's average" in mobile
    # state carry, publication from the registered spaces
    parking = texts["parking"]
    assert "holds until it changes, for at most 2 hours" in parking
    assert "decided from the parking spaces registered in it, not from the sensors that happened to report" in parking
    assert "an area that is full (or empty) says that every one of its bays is taken" in parking
    # small counts of every class, and the weighted speed
    traffic = texts["traffic"]
    assert "counts of cars, heavy vehicles, cyclists and pedestrians below 5 in a period of 1 hour" in traffic
    assert "added to the figure of the day" in traffic
    assert "weighted by the cars and heavy vehicles it averages" in traffic
    assert "never an average over fewer than 5 vehicles" in traffic
    # the schema's removed key is gone from the text, and nothing mentions a single connection's share
    assert "No single grid connection" not in explain(c)
