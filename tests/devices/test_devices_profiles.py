"""Device profiles: shipped files, validation errors, overrides, inheritance, serialisation."""

from __future__ import annotations

import dataclasses
import math

import pytest

from nvmstream.devices import (
    DRIFT_MODELS,
    DETECTIONS,
    ENCODINGS,
    PROGRAMMING_MODELS,
    READ_MODELS,
    SECTIONS,
    DeviceProfile,
    ProfileError,
    list_profiles,
    load_profile,
    parse_override,
)
from nvmstream.devices.profile import AdcSection, MappingSection

SHIPPED = ["ideal", "int4", "rram", "rram-faulty", "pcm", "pcm-1h", "pcm-1d", "pcm-1y", "snr0db", "nand-eol",
           "pcm-chip"]


def test_list_profiles_has_every_shipped_profile():
    assert sorted(SHIPPED) == list_profiles()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_with_source_and_full_description(name):
    p = load_profile(name)
    assert p.name == name
    assert p.source and p.description
    text = p.describe()
    for sec, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"{sec}.{f.name} = " in text
    # round trips
    assert DeviceProfile.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("name", SHIPPED)
def test_to_toml_round_trip(name, write_toml):
    p = load_profile(name)
    path = write_toml(p.to_toml(), name="resolved")
    q = load_profile(path)
    assert q == dataclasses.replace(p, base="")


def test_shipped_profile_contents():
    ideal = load_profile("ideal")
    assert ideal == DeviceProfile(name="ideal", description=ideal.description, source=ideal.source)
    assert (ideal.weights.bits, ideal.dac.bits, ideal.adc.bits) == (0, 0, 0)
    int4 = load_profile("int4")
    assert (int4.weights.bits, int4.dac.bits, int4.adc.bits) == (4, 4, 4)
    assert int4.programming.model == "none" and int4.read.model == "none"
    pcm = load_profile("pcm")
    assert pcm.programming.model == "pcm_poly" and pcm.drift.model == "pcm"
    assert pcm.read.model == "pcm_1f" and pcm.drift.compensation == "global"
    assert pcm.mapping.gmax_uS == 25.0 and pcm.drift.age_s == 86400.0 and pcm.drift.t0_s == 20.0
    for name, age in [("pcm-1h", 3600.0), ("pcm-1d", 86400.0), ("pcm-1y", 31536000.0)]:
        p = load_profile(name)
        assert p.base == "pcm" and p.drift.age_s == age
        # everything but identity and age is inherited from pcm
        assert dataclasses.replace(p.drift, age_s=pcm.drift.age_s) == pcm.drift
        for sec in SECTIONS:
            if sec != "drift":
                assert getattr(p, sec) == getattr(pcm, sec)
    snr = load_profile("snr0db")
    assert snr.vmm_noise.snr_db == 0.0 and snr.vmm_noise.enabled and snr.weights.bits == 4
    assert not int4.vmm_noise.enabled
    nand = load_profile("nand-eol")
    assert nand.storage.ber == 3e-4 and nand.storage.encoding == "twos_complement"
    assert nand.storage.detection == "none" and nand.weights.bits == 4
    rram = load_profile("rram")
    assert rram.mapping.gmax_uS == 40.0 and rram.programming.model == "poly"
    assert len(rram.programming.poly_coeffs_uS) == 5


def test_every_field_is_documented():
    for sec, cls in SECTIONS.items():
        assert cls.__doc__
        for f in dataclasses.fields(cls):
            assert f.metadata["doc"], f"{sec}.{f.name} has no doc"
            kind = f.metadata["kind"]
            if kind in (int, float) or kind is tuple:
                assert f.metadata["unit"], f"{sec}.{f.name} has no unit"
    for f in dataclasses.fields(DeviceProfile):
        assert f.metadata.get("doc") or f.name in SECTIONS


def test_profile_enums_match_mechanism_registries():
    def choices(cls, name):
        return next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == name)

    assert set(choices(SECTIONS["programming"], "model")) == set(PROGRAMMING_MODELS.names())
    assert set(choices(SECTIONS["drift"], "model")) == set(DRIFT_MODELS.names())
    assert set(choices(SECTIONS["read"], "model")) == set(READ_MODELS.names())
    assert set(choices(SECTIONS["storage"], "encoding")) == set(ENCODINGS.names())
    assert set(choices(SECTIONS["storage"], "detection")) == set(DETECTIONS.names())


# --- overrides ------------------------------------------------------------------------------

def test_overrides_list_and_mapping():
    p = load_profile("pcm", ["adc.bits=6", "drift.compensation=none", "storage.encoding=gray",
                             "vmm_noise.snr_db=3.5", "name=mine", 'description="x y"'])
    assert p.adc.bits == 6 and p.drift.compensation == "none" and p.storage.encoding == "gray"
    assert p.vmm_noise.snr_db == 3.5 and p.name == "mine" and p.description == "x y"
    q = load_profile("pcm", {"adc.bits": 6, "drift.age_s": 10, "storage.encoding": "gray"})
    assert q.adc.bits == 6 and q.drift.age_s == 10.0 and isinstance(q.drift.age_s, float)
    r = load_profile("snr0db", ["vmm_noise.snr_db=inf"])
    assert math.isinf(r.vmm_noise.snr_db) and not r.vmm_noise.enabled
    s = load_profile("rram", ["programming.poly_coeffs_uS=[1, 2.5]"])
    assert s.programming.poly_coeffs_uS == (1.0, 2.5)


def test_with_overrides_leaves_original_and_revalidates():
    p = load_profile("int4")
    q = p.with_overrides(["adc.bits=8"])
    assert p.adc.bits == 4 and q.adc.bits == 8
    assert load_profile(q) == q
    assert load_profile(q, {"dac.bits": 2}).dac.bits == 2
    with pytest.raises(ProfileError, match=r"adc\.bits"):
        p.with_overrides({"adc.bits": 99})


def test_parse_override_values():
    assert parse_override("adc.bits=6") == ("adc.bits", 6)
    assert parse_override("storage.ber = 3e-4") == ("storage.ber", 3e-4)
    assert parse_override("drift.compensation=true") == ("drift.compensation", True)
    assert parse_override('storage.encoding="gray"') == ("storage.encoding", "gray")
    assert parse_override("storage.encoding=gray") == ("storage.encoding", "gray")


@pytest.mark.parametrize("bad", ["adc.bits", "adcbits", "adc.bits=", "=3", "a.b.c=1",
                                 "adc.bits=6 7", "adc.bits=[1,"])
def test_bad_override_syntax(bad):
    with pytest.raises(ProfileError) as exc:
        load_profile("int4", [bad])
    assert "override" in str(exc.value) and "int4.toml" in str(exc.value)


@pytest.mark.parametrize(
    "override, fieldname, allowed",
    [
        ("adc.bits=99", "adc.bits", "[2, 16]"),
        ("adc.bits=1", "adc.bits", "or 0"),
        ("weights.bits=4.5", "weights.bits", "integer"),
        ("dac.bits=true", "dac.bits", "integer"),
        ("storage.ber=0.7", "storage.ber", "[0, 0.5]"),
        ("storage.encoding=ascii", "storage.encoding", "'gray'"),
        ("storage.detection=ecc", "storage.detection", "'nulling'"),
        ("programming.model=magic", "programming.model", "'pcm_poly'"),
        ("drift.model=linear", "drift.model", "'pcm'"),
        ("read.model=shot", "read.model", "'pcm_1f'"),
        ("weights.scale=per_tensor", "weights.scale", "'per_channel'"),
        ("adc.track_drift=1", "adc.track_drift", "true or false"),
        ("drift.compensation=fold", "drift.compensation", "'per_column'"),
        ("adc.range=per_row", "adc.range", "'per_tile'"),
        ("drift.age_s=-1", "drift.age_s", "[0, 1e+12]"),
        ("drift.t0_s=0", "drift.t0_s", "(0, 1e+12]"),
        ("mapping.gmax_uS=nan", "mapping.gmax_uS", "number"),
        ("adc.volume=3", "adc.volume", "fields of [adc]"),
        ("radio.bits=3", "radio.bits", "unknown section"),
        ("tile.rows=0", "tile.rows", "[1, 65536]"),
    ],
)
def test_override_errors_name_field_and_allowed(override, fieldname, allowed):
    with pytest.raises(ProfileError) as exc:
        load_profile("int4", [override])
    msg = str(exc.value)
    assert fieldname in msg and allowed in msg
    assert "int4.toml" in msg and f"override {override!r}" in msg
    assert exc.value.field == fieldname
    assert isinstance(exc.value, ValueError)


# --- file errors ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, fieldname, expect",
    [
        ("[adc]\nbits = 99\n", "adc.bits", "[2, 16]"),
        ("[adc]\nvolume = 3\n", "adc.volume", "fields of [adc]"),
        ("[radio]\nbits = 3\n", "radio", "unknown section"),
        ('[storage]\nencoding = "ebcdic"\n', "storage.encoding", "'twos_complement'"),
        ('[weights]\nbits = "four"\n', "weights.bits", "integer"),
        ("[mapping]\ngmin_uS = 30.0\ngmax_uS = 25.0\n", "mapping.gmax_uS", "greater than"),
        ("[faults]\np_stuck_low = 0.6\np_stuck_high = 0.5\n", "faults.p_stuck_high", "<= 1"),
        ("[storage]\nber = 0.01\n", "storage.ber", "weights.bits"),
        ('[programming]\nmodel = "poly"\n', "programming.poly_coeffs_uS", "non-empty"),
        ('[programming]\npoly_coeffs_uS = ["a"]\n', "programming.poly_coeffs_uS", "list of numbers"),
        ("adc = 3\n", "adc", "[section]"),
        ('base = "pcmx"\n', "base", "pcm-1h"),
        ("base = 3\n", "base", "profile name"),
        ('base = "missing.toml"\n', "base", "not found"),
    ],
)
def test_file_errors_name_file_and_field(write_toml, text, fieldname, expect):
    path = write_toml(text)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    msg = str(exc.value)
    assert path in msg and fieldname in msg and expect in msg, msg


def test_unknown_profile_lists_valid_names():
    with pytest.raises(ProfileError) as exc:
        load_profile("pcm-10y")
    for name in SHIPPED:
        assert name in str(exc.value)


def test_missing_file_and_invalid_toml(write_toml, tmp_path):
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile(str(tmp_path / "nope.toml"))
    path = write_toml("[adc\nbits=")
    with pytest.raises(ProfileError, match="not valid TOML") as exc:
        load_profile(path)
    assert path in str(exc.value)


def test_circular_base(write_toml):
    a = write_toml('base = "b.toml"\n', name="a")
    write_toml('base = "a.toml"\n', name="b")
    with pytest.raises(ProfileError, match="circular"):
        load_profile(a)


def test_inheritance_from_shipped_and_from_file(write_toml):
    path = write_toml('base = "pcm"\ndescription = "my pcm"\n[adc]\nbits = 6\n[drift]\nage_s = 60.0\n',
                      name="mypcm")
    p = load_profile(path)
    pcm = load_profile("pcm")
    assert p.name == "mypcm" and p.base == "pcm" and p.description == "my pcm"
    assert p.adc.bits == 6 and p.drift.age_s == 60.0
    assert p.programming == pcm.programming and p.read == pcm.read and p.source == pcm.source
    # a chain: file -> file -> shipped
    child = write_toml('base = "mypcm.toml"\n[dac]\nbits = 8\n', name="child")
    c = load_profile(child, ["adc.bits=7"])
    assert (c.dac.bits, c.adc.bits, c.drift.age_s, c.programming.model) == (8, 7, 60.0, "pcm_poly")


def test_empty_file_is_ideal(write_toml):
    p = load_profile(write_toml("", name="empty"))
    assert dataclasses.replace(p, name="ideal") == DeviceProfile(name="ideal")


def test_replace_and_constructor_validate():
    p = load_profile("int4")
    assert p.replace(adc=AdcSection(bits=8)).adc.bits == 8
    with pytest.raises(ProfileError, match=r"adc\.bits"):
        AdcSection(bits=1)
    with pytest.raises(ProfileError, match=r"mapping\.gmax_uS"):
        MappingSection(gmin_uS=5.0, gmax_uS=5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.adc.bits = 3  # type: ignore[misc]
    with pytest.raises(ProfileError, match=r"storage\.ber"):
        load_profile("nand-eol").replace(weights=SECTIONS["weights"](bits=0))
