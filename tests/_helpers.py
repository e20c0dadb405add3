"""What several test files share: a refused command's one-line error, an example run to its flags."""
import importlib.util
from pathlib import Path

from curriculoss.harness.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run `curriculoss ARGV`, assert it was refused with one `curriculoss: error:` line, return it."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code, text = exc.code, str(exc.code) if isinstance(exc.code, str) else ""
    else:
        text = ""
    assert code not in (0, None)
    text = text or capsys.readouterr().err
    assert text.startswith("curriculoss: error: ") and text.strip().count("\n") == 0, text
    return text


def run_example(script: Path, argv: list[str]) -> dict:
    """Import an example script and call its `main(argv)`; assert it wrote nothing outside its `--out`."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    before = set(Path.cwd().iterdir())
    figures = example.main(argv)
    assert set(Path.cwd().iterdir()) == before  # nothing written outside --out
    return figures
