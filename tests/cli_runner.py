"""Run the meanfield command in-process for tests: main(argv) -> (exit status, stdout, stderr)."""

from meanfield.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """main(argv) -> (exit status, stdout, stderr), whether main returns or exits."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return int(status or 0), captured.out, captured.err
