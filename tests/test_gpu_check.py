"""scripts/gpu_check.sh, kept from rotting between GPU sessions: the bundle's parts (joined,
checked, refused when one is missing or damaged) and the whole check on the CPU (--smoke)."""

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_bundle  # noqa: E402


def _payload(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    (source / "wheels").mkdir(parents=True)
    (source / "wheels" / "a.whl").write_bytes(bytes(range(256)) * 300)
    (source / "data").mkdir()
    (source / "data" / "facts.json").write_text('{"x": 1}')
    payload = tmp_path / "payload.tar"
    with tarfile.open(payload, "w") as tar:
        tar.add(source / "wheels", arcname="wheels")
        tar.add(source / "data", arcname="data")
    return payload


def test_the_parts_join_into_the_payload_and_a_missing_or_damaged_part_stops_it(tmp_path):
    bundle = tmp_path / "bundle"
    payload = _payload(tmp_path)
    manifest = gpu_bundle.split(payload, bundle, 20_000, ["a.whl"])
    assert len(manifest["parts"]) == -(-payload.stat().st_size // 20_000) >= 4
    out = gpu_bundle.reassemble(bundle, tmp_path / "out")
    assert (out / "wheels" / "a.whl").read_bytes() == bytes(range(256)) * 300
    assert json.loads((out / "data" / "facts.json").read_text()) == {"x": 1}

    part = bundle / "part-02"
    data = part.read_bytes()
    part.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(SystemExit, match="part-02: damaged"):
        gpu_bundle.reassemble(bundle, tmp_path / "again")
    part.unlink()
    with pytest.raises(SystemExit, match=r"1 of \d parts missing .*part-02 \(call 3\)"):
        gpu_bundle.reassemble(bundle, tmp_path / "again")
    (bundle / "manifest.json").unlink()
    with pytest.raises(SystemExit, match="manifest.json is missing"):
        gpu_bundle.reassemble(bundle, tmp_path / "again")


def test_the_calls_each_carry_one_part_and_the_last_runs_the_check(tmp_path):
    manifest = gpu_bundle.split(_payload(tmp_path), tmp_path / "b", 40_000, [])
    calls = gpu_bundle.calls_text(manifest, tmp_path / "b").splitlines()
    assert len(calls) == len(manifest["parts"]) == 3
    assert "part-00" in calls[0] and "have part-00" in calls[0] and "part-01" in calls[1]
    assert calls[-1].endswith("command: bash scripts/gpu_check.sh")


def test_the_check_without_its_bundle_says_what_is_missing(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"),
                          "--bundle", str(tmp_path / "none"), "--work", str(tmp_path / "w"),
                          "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "manifest.json is missing" in out.stderr


def _smoke_data(root: Path) -> Path:
    """The paper cell's and the regime row's files in their upstream layouts, written here
    (never the samples)."""
    (root / "popqa").mkdir(parents=True)
    rows = [{"input": f"Who made widget {i}?", "output": json.dumps([f"Maker {i}"]), "id": i,
             "s_pop": 3, "o_pop": 5} for i in range(12)]  # fmt: skip
    (root / "popqa" / "popqa_2000.json").write_text(json.dumps({"dev": rows[:6],
                                                                "test": rows[6:]}))
    (root / "lama" / "trex_lms_vocab").mkdir(parents=True)
    (root / "lama" / "trex_lms_vocab" / "P19.jsonl").write_text("".join(
        json.dumps({"sub_label": f"Person {i}", "obj_label": f"Town{i}", "uuid": str(i)}) + "\n"
        for i in range(30)))  # fmt: skip
    (root / "gsm8k").mkdir()
    (root / "gsm8k" / "train.jsonl").write_text("".join(
        json.dumps({"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n"
                    f"#### {2 * i}"}) + "\n" for i in range(12)))  # fmt: skip
    (root / "nltk").mkdir()
    with zipfile.ZipFile(root / "nltk" / "state_union.zip", "w") as archive:
        for d in range(4):
            archive.writestr(f"state_union/{d}.txt",
                             " ".join(f"w{d}x{j}" for j in range(1100)))  # fmt: skip
    return root


def test_the_whole_check_runs_on_the_cpu_with_a_tiny_model(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--smoke",
                           "--data-dir", str(_smoke_data(tmp_path / "data")), "--out", str(out),
                           "--work", str(work), "--budget-s", "850"],  # a busy CPU is slow
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0, (summary, proc.stdout[-3000:])
    steps = summary["steps"]
    assert steps["default run"]["devices"] and all(
        d.startswith("cpu") for d in steps["default run"]["devices"])
    assert steps["familiarity"]["unknown"] > 0
    naive = steps["throughput kvr"]["results"]["naive"]["tokens_per_s"]
    assert naive > 0 and steps["throughput mixed"]["results"]["now"]["tokens_per_s"] > 0
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    runs = {n.split("/")[2] for n in names if n.startswith("archive/gpu-paper/")
            and n.endswith("results.json")}  # fmt: skip
    assert runs == {"seed0_no-mixing", "seed0_none_generic", "seed0_none_random"}
    row = {n.split("/")[2] for n in names if n.startswith("archive/regime-map/")
           and n.endswith("results.json")}  # fmt: skip
    rates = ("0.0003", "0.0001", "5e-05")
    assert row == {f"facts512_learning_rate{rate}_{pair}" for rate in rates
                   for pair in ("popqa-lama", "kvr-gsm8k", "kvr-gsm8k128")}  # fmt: skip
    assert all(steps[f"regime row: lr {r}"]["status"] == "ok" for r in rates)
    assert "regime-report/report.md" in names
    assert "report/report.md" in names and not [n for n in names if n.endswith(".safetensors")]
    assert (out / "gpu_check.log").stat().st_size > 0
