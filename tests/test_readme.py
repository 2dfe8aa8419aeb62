"""README's commands, run as written: they are the first thing a user tries, so they must keep working.

Which commands (a simple rule, so a reader of README can predict it):

- in a fenced ``console`` block, a line starting with ``$ `` is a command, and the lines after it, up
  to the next ``$ `` or the end of the block, are the output README shows for it;
- in a fenced ``bash`` block, every line that is neither blank nor a ``#`` comment is a command;
- a line ending in ``\\`` goes on with the next one.

Each command belongs to the README section (heading) above it. A section runs as one session: a fresh
working directory (symlinks to the repository's top-level entries, so README's relative paths work
and whatever a command writes stays out of the tree), its own ``RTSIP_STATE_DIR``, and the servers it
starts (README shows them in terminals of their own) kept up until the section ends.

What the test changes in a command, and nothing else:

- ``SKIP``: commands that cannot run inside a test, each with its reason;
- ``SMALLER``: benchmark and load sizes swapped for small ones, flag by flag;
- ports, so that nothing collides with another test or a user's own mock: ``rtsip mock`` gets
  ``--port 0`` (and ``--sip-port 0`` unless it has ``--no-sip``) when it names none; README's 8765
  and 5061 then stand for the ports the section's mock printed in its ready line, 8000 (the example
  app's) for a free port, and 5099 for a port the test holds taken, as README's example needs;
- the ``rtc_…`` call id README shows is replaced by the one an earlier command of the section
  printed, and the ``whsec_…`` secret by the one the section's mock printed, as a user copies them.

A command passes when it exits 0 (``FAILS``: the status README documents for an error it shows) without a
traceback, a server when it prints its ready line, and when its output begins like README's: the
first line README shows, up to its first digit and ignoring spaces, must start a line of the real
output. ``OUTCOMES`` pins what some commands must print besides. The tables are checked against
README too, so an entry that no longer matches a command fails instead of rotting.

The links of README and ``docs/`` are checked as well, and that nothing in the repository points at
documents a user of rtsip does not have.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mock_api.running import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

COMMAND_TIMEOUT_S = 600.0  # a bound on a hang, not a guess at a duration
READY_TIMEOUT_S = 90.0  # a SIP mock starts worker processes; a busy CI box may take long

SKIP = {
    r"^python3 -m venv \.venv && \.venv/bin/pip install .*rtsip demo$":
        "creates a venv and installs rtsip, which is what .ci/run does before the tests; the `rtsip demo` "
        "at its end is run by tests/test_demo.py",
    r"^apt-get update && apt-get install ":
        "installs Debian packages as root and then runs the whole test suite, this test included",
    r"^rtsip demo$": "tests/test_demo.py runs it and checks its narration",
    r"^rtsip demo --live$": "tests/test_live_scenarios.py runs it and checks its narration",
    r"^rtsip call 'sip:proj_rtsip@127\.0\.0\.1:40815;transport=tls' --codec opus": "an Opus call to the GPT-Live "
        "app, which this section does not start; tests/test_opus_sip.py places Opus calls through the mock",
    r"^rtsip answer --port 5071 ": "the trunk of the outbound call below, on a fixed port README names; "
        "tests/test_live_outbound.py runs rtsip answer and examples/live_outbound_call.py together",
    r"^OPENAI_BASE_URL=http://127\.0\.0\.1:39673/v1 OPENAI_API_KEY=sk-anything python examples/live_outbound_call\.py ":
        "needs the trunk above; tests/test_live_outbound.py runs it against rtsip answer and checks its lines",
}

SMALLER: dict[str, list[tuple[str, str]]] = {
    r"^rtsip load ": [("--calls 200", "--calls 20"), ("--concurrency 50", "--concurrency 10")],
    r"^python -m bench\.bench_control$": [
        ("bench.bench_control", "bench.bench_control --calls 20 --accepts 20 --concurrency 1 4")],
    r"^python -m bench\.bench_realtime$": [
        ("bench.bench_realtime", "bench.bench_realtime --sessions 1 4 --events 5 --seconds 0.5 --turns 2")],
    r"^python -m bench\.bench_stall$": [("bench.bench_stall", "bench.bench_stall --seconds 2 --burst 200")],
    r"^python -m bench\.bench_fuzz$": [("bench.bench_fuzz", "bench.bench_fuzz --cases 100")],
    r"^python -m bench\.bench_sip ": [
        ("--steps 64,150", "--steps 4"), ("--repeat 5", "--repeat 1 --hold 2 --quiet-wait 0")],
    # bench_load's virtual steps are 60 s calls at the least, so none runs; its --bare re-runs bench_sip's bare
    # stack (the command above runs it), which first waits up to 60 s for a quiet machine
    r"^python -m bench\.bench_load ": [
        ("--virtual 300,1000,2000", "--virtual ''"), ("--sip 150", "--sip 2"), (" --bare", ""),
        ("--soak-virtual 5000", "--soak-virtual 10"), ("--soak-sip 1000", "--soak-sip 0"),
        ("--distributed 2000", "--distributed 20")],
}

# Commands README shows failing: the exit status it documents, and why it shows them.
FAILS = {
    r"^rtsip mock --sip-port 5099$": (2, "the one-line error for a SIP port that is taken"),
    r"^rtsip run broken\.yaml$": (1, "what a mistake in a scenario file prints"),
}

OUTCOMES = {
    r"/accept ": "HTTP/1.1 200 OK",
    r"/refer ": "Missing required parameter: 'target_uri'.",
    r"^rtsip call ": "final status: 200 OK",
    r"^rtsip run scenarios/forum ": "rtsip run: 4/4 passed",
    r"^rtsip run broken\.yaml$": "broken.yaml:8: at mock.colour: unknown key 'colour'",
    r"^rtsip run chance\.yaml ": "rtsip run: 1/5 runs passed",
    r"^rtsip trigger ": "app answered 200",
    r"^rtsip load ": " 0 failed, 0 lost",
}

# Sections whose text says they run against servers another section starts.
PRELUDES = {
    "rtsip call": "Your app against the mock, by hand",
    "rtsip trigger": "Your app against the mock, by hand",
}

# Files README's commands read that README does not show (the broken file's mistake is on line 8).
FILES = {
    "chance.yaml": (
        "name: webhook-half-dropped\n"
        "app:\n"
        '  command: ["{python}", examples/sdk_app.py, --port, "{port}"]\n'
        "mock:\n"
        "  faults: [{name: webhook_drop, probability: 0.5}]\n"
        "  ring_timeout_s: 2\n"
        "calls:\n"
        "  - steps: [{hangup: true}]\n"
        "expect:\n"
        "  webhook_status: 200\n"
    ),
    "broken.yaml": (
        "# a scenario with a mistake in its mock section\n"
        "name: broken\n"
        "app:\n"
        '  command: ["{python}", examples/sdk_app.py, --port, "{port}"]\n'
        "calls:\n"
        "  - steps: [{hangup: true}]\n"
        "mock:\n"
        "  colour: blue\n"
    ),
}


@dataclass(frozen=True)
class Server:
    """A command that serves until stopped; ``ready`` matches the line it prints once it serves."""

    command: re.Pattern[str]
    ready: re.Pattern[str]
    port_from_ready: bool = False  # the ready line names a port that must accept connections first
    is_mock: bool = False  # its ready line tells the section's ports and webhook secret


SERVERS = (
    Server(re.compile(r"^rtsip mock\b"), re.compile(r"^rtsip mock ready: "), is_mock=True),
    # sdk_app prints its line just before it binds, hence the wait for its port
    Server(re.compile(r"\bpython examples/sdk_app\.py\b"),
           re.compile(r"^sdk_app listening on http://127\.0\.0\.1:(\d+)"), port_from_ready=True),
)


# ---- extraction ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    section: str
    line: int  # README line of the command's first line
    text: str  # continuation lines joined with single spaces
    shown: tuple[str, ...]  # the output README shows under it (console blocks)

    def where(self) -> str:
        return f"README.md:{self.line} ({self.section}): {self.text}"


def heading(line: str) -> str | None:
    """The text of a Markdown heading line, backticks dropped, or None."""
    m = re.match(r"^#{1,6} (.+)$", line)
    return m.group(1).replace("`", "").strip() if m else None


def extract(text: str) -> list[Command]:
    """README's shell commands, by the rule in the module docstring."""
    commands: list[Command] = []
    section, lang = "", None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang = None if lang is not None else (line[3:].strip() or "")
        elif lang is None:
            section = heading(line) or section
        elif lang in ("bash", "console"):
            start = i
            body = line[2:] if lang == "console" and line.startswith("$ ") else line
            is_command = (lang == "console" and line.startswith("$ ")) or (
                lang == "bash" and line.strip() != "" and not line.lstrip().startswith("#"))
            if is_command:
                parts = [body]
                while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                    parts[-1] = parts[-1].rstrip()[:-1].rstrip()
                    i += 1
                    parts.append(lines[i].strip())
                shown: list[str] = []
                while lang == "console" and i + 1 < len(lines) and not lines[i + 1].startswith(("$ ", "```")):
                    i += 1
                    shown.append(lines[i])
                while shown and not shown[-1].strip():
                    shown.pop()
                commands.append(Command(section, start + 1, " ".join(parts), tuple(shown)))
        i += 1
    return commands


def readme_commands() -> list[Command]:
    return extract(README.read_text())


def matching(table: Mapping[str, object], command: Command) -> str | None:
    """The key of ``table`` whose pattern finds ``command``, if any."""
    return next((key for key in table if re.search(key, command.text)), None)


def server_for(command: Command) -> Server | None:
    if matching(FAILS, command):
        return None
    return next((s for s in SERVERS if s.command.search(command.text)), None)


def sections_to_run() -> list[str]:
    runnable = [c.section for c in readme_commands() if not matching(SKIP, c)]
    return sorted(set(runnable), key=runnable.index)


# ---- running -----------------------------------------------------------------------------------------


@dataclass
class Session:
    """One README section's state: where it runs, what it learned, what it started."""

    workdir: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # README's port -> the real one
    secret: str | None = None
    call_id: str | None = None
    servers: dict[Server, Background] = field(default_factory=dict)
    held: list[socket.socket] = field(default_factory=list)


class Background:
    """A server command in its own process group, its output read as it comes (so it never blocks)."""

    def __init__(self, text: str, session: Session, ready: re.Pattern[str]) -> None:
        self.ready = ready
        self.lines: list[str] = []
        self.ready_line: str | None = None
        self._event = threading.Event()
        self.proc = subprocess.Popen(["bash", "-c", text], cwd=session.workdir, env=session.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.ready_line is None and self.ready.search(line):
                self.ready_line = line.rstrip("\n")
                self._event.set()
        self._event.set()  # it ended: whoever waits learns it at once

    def wait_ready(self) -> str:
        self._event.wait(READY_TIMEOUT_S)
        if self.ready_line is None:
            raise AssertionError("never printed its ready line; it printed:\n" + "\n".join(self.lines[-30:]))
        return self.ready_line

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; killed if it does not go."""
        for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of its group still there
        self._reader.join(10)


def wait_listening(port: int) -> None:
    """Until something accepts connections on 127.0.0.1:``port`` (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


def hold_port() -> tuple[socket.socket, int]:
    """A listening socket on a port from the OS: a port that is taken, for README's error example."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pjsip binds: truly taken, not TIME_WAIT
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, int(s.getsockname()[1])


def prepare(command: Command, session: Session) -> str:
    """The command as the test runs it: the documented substitutions, nothing else."""
    text = command.text
    key = matching(SMALLER, command)
    for old, new in SMALLER.get(key, []) if key else []:
        text = text.replace(old, new)
    if re.match(r"^rtsip mock\b", text):
        if not re.search(r"--port\b", text):
            text += " --port 0"
        if not re.search(r"--sip-port\b|--no-sip\b", text):
            text += " --sip-port 0"

    def port(m: re.Match[str]) -> str:
        if m.group(1) not in session.ports:
            raise AssertionError(f"uses port {m.group(1)}, but nothing in its section has said which port that is "
                                 "(no `rtsip mock` ready line yet?)")
        return str(session.ports[m.group(1)])

    text = re.sub(r"(?<![\w.])(8765|8000|5061|5099)(?!\d)", port, text)
    if session.call_id:
        text = re.sub(r"\brtc_[0-9a-f]{32}\b", session.call_id, text)
    if session.secret:
        text = re.sub(r"whsec_[A-Za-z0-9+/=]+", lambda _m: session.secret or "", text)
    return text


def learn_from_mock(line: str, session: Session) -> None:
    """What a mock's ready line says that later commands need: its ports and its webhook secret."""
    m = re.search(r"base_url=http://127\.0\.0\.1:(\d+)/", line)
    if m:
        session.ports["8765"] = int(m.group(1))
    m = re.search(r"sip=sips?:[^@\s]+@127\.0\.0\.1:(\d+)", line)
    if m:
        session.ports["5061"] = int(m.group(1))
    m = re.search(r"webhook_secret=(\S+)", line)
    if m:
        session.secret = m.group(1)


def start_server(server: Server, text: str, session: Session) -> str:
    """Start a server command (stopping one of its kind first, as its terminal is reused) until it is ready."""
    previous = session.servers.pop(server, None)
    if previous is not None:
        previous.stop()
    bg = Background(text, session, server.ready)
    session.servers[server] = bg
    line = bg.wait_ready()
    if server.port_from_ready:
        m = server.ready.search(line)
        assert m is not None
        wait_listening(int(m.group(1)))
    if server.is_mock:
        learn_from_mock(line, session)
    return line


def run_to_end(text: str, session: Session) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(["bash", "-c", text], cwd=session.workdir, env=session.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(killed after {COMMAND_TIMEOUT_S:.0f} s)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the command left behind in its group
    return subprocess.CompletedProcess(text, proc.returncode, out, err)


def stem(line: str) -> str:
    """README's shown line up to its first digit, without spaces: the part that is the same every run."""
    return "".join(re.split(r"\d", line, maxsplit=1)[0].split())


def output_problems(command: Command, output: str) -> list[str]:
    problems = []
    if "Traceback (most recent call last)" in output:
        problems.append("printed a traceback")
    first = next((line for line in command.shown if line.strip()), "")
    want = stem(first)
    lines = ["".join(line.split()) for line in output.splitlines()]
    if len(want) >= 4 and not any(line.startswith(want) for line in lines):
        problems.append(f"README shows {first.strip()!r} first; no line of the output starts that way")
    key = matching(OUTCOMES, command)
    if key and OUTCOMES[key] not in output:
        problems.append(f"does not print {OUTCOMES[key]!r}")
    return problems


def check(command: Command, session: Session) -> list[str]:
    """Run one command in its session; what went wrong, if anything (empty when it works as written)."""
    try:
        text = prepare(command, session)
        server = server_for(command)
        if server is not None:
            return output_problems(command, start_server(server, text, session))
        result = run_to_end(text, session)
    except AssertionError as exc:
        return [str(exc)]
    output = result.stdout + result.stderr
    problems = output_problems(command, output)
    failing = matching(FAILS, command)
    if failing:
        if result.returncode != FAILS[failing][0]:
            problems.append(f"exit status {result.returncode}, README documents {FAILS[failing][0]}")
        elif len(command.shown) == 1 and result.stderr.strip() != prepare_shown(command.shown[0], session):
            problems.append(f"its one-line error is now {result.stderr.strip()!r}")
    elif result.returncode != 0:
        problems.append(f"exit status {result.returncode}")
    m = re.search(r'"call_id":\s*"(rtc_[0-9a-f]+)"', result.stdout)
    if m and session.call_id is None:
        session.call_id = m.group(1)
    if problems:
        problems.append("ran: " + text + "\n" + output[-3000:])
    return problems


def prepare_shown(line: str, session: Session) -> str:
    """README's shown output line with the same port substitutions as its command."""
    return re.sub(r"(?<![\w.])(8765|8000|5061|5099)(?!\d)",
                  lambda m: str(session.ports.get(m.group(1), m.group(1))), line).strip()


@contextlib.contextmanager
def session_for(tmp_path: Path) -> Iterator[Session]:
    work = tmp_path / "work"
    work.mkdir()
    for entry in ROOT.iterdir():
        if not entry.name.startswith("."):
            (work / entry.name).symlink_to(entry)
    for name, content in FILES.items():
        (work / name).write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(RTSIP_STATE_DIR=str(tmp_path / "state"), COLUMNS="200",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    session = Session(work, env)
    taken, port = hold_port()
    session.held.append(taken)
    session.ports.update({"8000": free_port(), "5099": port})
    try:
        yield session
    finally:
        for bg in reversed(list(session.servers.values())):
            bg.stop()
        for s in session.held:
            s.close()


# ---- the tests -----------------------------------------------------------------------------------------


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("section", sections_to_run(), ids=lambda s: re.sub(r"\W+", "_", s.lower()).strip("_"))
def test_readme_section_works_as_written(section: str, tmp_path: Path) -> None:
    commands = readme_commands()
    prelude = [c for c in commands if c.section == PRELUDES.get(section) and server_for(c)]
    own = [c for c in commands if c.section == section and not matching(SKIP, c)]
    assert own, f"section {section!r} has no command to run"
    failures = []
    with session_for(tmp_path) as session:
        for command in [*prelude, *own]:
            problems = check(command, session)
            if problems:
                failures.append(command.where() + "\n  " + "\n  ".join(problems))
    assert not failures, "README commands that no longer work as written:\n\n" + "\n\n".join(failures)


def test_extraction_finds_readme_commands_and_the_tables_still_match() -> None:
    commands = readme_commands()
    texts = [c.text for c in commands]
    # the rule at work: a console command with its output, a continued command, a bash command
    assert any(c.text.startswith("rtsip mock --webhook-url") and c.shown for c in commands)
    assert any("OPENAI_WEBHOOK_SECRET=" in t and "examples/sdk_app.py" in t for t in texts)
    assert any(t.startswith("python -m bench.") for t in texts)
    for table in (SKIP, SMALLER, FAILS, OUTCOMES):
        for key in table:
            assert any(re.search(key, t) for t in texts), f"no README command matches {key!r} any more"
    for key, swaps in SMALLER.items():
        for old, _new in swaps:
            assert any(re.search(key, t) and old in t for t in texts), f"{key!r}: README has no {old!r} any more"
    sections = {c.section for c in commands}
    for section, prelude in PRELUDES.items():
        assert {section, prelude} <= sections, f"README has no section {section!r} or {prelude!r}"


def test_extract_reads_console_and_bash_blocks() -> None:
    text = "\n".join([
        "# Title", "## One", "```console", "$ rtsip mock \\", "    --no-sip", "ready line", "", "$ curl x",
        "{}", "```", "```bash", "# a comment", "python -m bench.x", "", "```", "```yaml", "$ not: this", "```",
    ])
    assert extract(text) == [
        Command("One", 4, "rtsip mock --no-sip", ("ready line",)),
        Command("One", 8, "curl x", ("{}",)),
        Command("One", 13, "python -m bench.x", ()),
    ]


def slug(title: str) -> str:
    """A heading's anchor the way GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def without_code(text: str) -> str:
    """Markdown without fenced blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_point_at_files_and_headings_that_exist(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(doc.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files: what a clone of the work tree would hold."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                         check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_nothing_points_at_documents_users_do_not_have() -> None:
    forbidden = ("../" + "shared", "shared/" + "design.md")  # spelled apart so this file does not match
    hits = []
    for path in repository_files():
        if not path.is_file():
            continue  # deleted in the work tree, not yet in the index
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (audio)
        text = data.decode(errors="replace")
        hits += [f"{path.relative_to(ROOT)}: {word}" for word in forbidden if word in text]
    assert not hits, "users of rtsip do not have these documents; point at docs/ instead: " + ", ".join(hits)


def test_gitignore_ignores_no_tracked_file() -> None:
    repository_files()  # skips outside a git checkout
    out = subprocess.run(["git", "ls-files", "-i", "-c", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out == "", "tracked files that .gitignore ignores (fix the patterns, e.g. anchor them with /):\n" + out
