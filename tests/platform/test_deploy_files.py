import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_docker_compose_is_valid_against_compose_spec():
    check = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    result = subprocess.run(
        [check, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_procfile_starts_every_process():
    names = {line.split(":", 1)[0] for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()}
    assert names == {"web", "wallet", "engine", "worker", "beat"}
