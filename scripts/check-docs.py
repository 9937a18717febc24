#!/usr/bin/env python3
"""check-docs.py: the mechanical part of "the documents tell the truth" (CTest test docs.check).

  scripts/check-docs.py --bin build/pingvas --build-dir build

Checks every Markdown file the repository tracks (README.md, docs/, fuzz/, bench/, deploy/, ...):

1. Flags. In code (inline spans and fenced blocks) every `pingvas COMMAND ... --flag` names a
   command that exists and a flag that `pingvas help COMMAND` lists. An inline span that starts
   with a flag (`--max-workers 4`) names a flag of some pingvas command, unless the flag is in
   FOREIGN_FLAGS (another program's flag that the docs mention on its own).
2. Test labels. Every `ctest ... -L LABEL` selects at least one test in the build directory
   (`ctest -N -L LABEL`); `production` only counts when the build was configured with
   -DPINGVAS_TEST_PRODUCTION=ON, and `fuzz` only when the fuzz test is configured (clang found,
   not the sanitizer build): CMake says which through PINGVAS_DOCCHECK_OPTIONAL_LABELS.
3. Links. Every relative link [text](path#fragment) resolves to a file or directory of the
   repository, and a #fragment into a Markdown file (or on the same page) names one of its
   headings (GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for
   repeats); http(s) and mailto links are not followed.
4. Layout. The README's "Layout" section names every src/**/*.c file, and its "Commands" table
   every command `pingvas help` lists.
5. Schema versions. The table of docs/operations.md ("| SQLite | N | ...") lists every version
   up to SCHEMA_VERSION of src/store/store_sqlite.c and store_pg.c, and none beyond.

A line that shows a wrong command on purpose (an example of an error) carries
<!-- check-docs: ignore --> at its end, or on the line before a fenced block; it is not checked.

Prints one line per problem (file:line: what) and exits 1 when there is any; 0 otherwise.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys

# Flags of other programs that the docs name on their own, in an inline span, with the program.
FOREIGN_FLAGS = {
    "--horizontal-pod-autoscaler-sync-period": "kube-controller-manager",
    "--horizontal-pod-autoscaler-tolerance": "kube-controller-manager",
    "--horizontal-pod-autoscaler-downscale-stabilization": "kube-controller-manager",
    "--api": "AUTOMATIC1111's webui.sh",
    "--no-healthcheck": "docker run",
}

# Words that may stand before the program in a command: `sudo pingvas ...`, `exec pingvas ...`.
PREFIXES = {"sudo", "exec", "time", "env", "nohup", "command"}

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FLAG = re.compile(r"^--[a-z0-9][a-z0-9-]*")
CTEST_L = re.compile(r"\bctest\b[^`\n|;&]*?\s-L\s+([A-Za-z0-9_.^$*+-]+)")


def tracked_markdown(root):
    out = subprocess.run(["git", "-C", root, "ls-files", "*.md", "**/*.md"], capture_output=True,
                         text=True)
    files = sorted(set(out.stdout.split())) if out.returncode == 0 else []
    if not files:  # not a git checkout: walk, skipping build output and npm packages
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if not x.startswith(("build", ".")) and x != "node_modules"]
            files += [os.path.relpath(os.path.join(d, n), root) for n in names if n.endswith(".md")]
    return [f for f in files if "node_modules/" not in f]


IGNORE = "<!-- check-docs: ignore -->"


def code_pieces(text):
    """Yields (line number, code text) for fenced blocks (continuation lines joined) and spans."""
    in_fence = skip_fence = False
    block = []
    prev = ""
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            skip_fence = in_fence and IGNORE in prev
            prev = line
            continue
        ignored = IGNORE in line
        prev = line
        if in_fence and skip_fence or ignored:
            continue
        if in_fence:
            block.append((n, line))
            if not line.rstrip().endswith("\\"):
                start = block[0][0]
                yield start, " ".join(l.rstrip().rstrip("\\") for _, l in block)
                block = []
            continue
        for m in INLINE.finditer(line):
            yield n, m.group(2)


class Help:
    """The flags of each pingvas command, read from `pingvas help` and `pingvas help CMD`."""

    def __init__(self, binary):
        self.bin = binary
        top = self.run("help")
        self.commands = []
        seen = False
        for line in top.split("\n"):
            if line.startswith("Commands:"):
                seen = True
            elif seen and re.match(r"^  [a-z]", line):
                self.commands.append(line.split()[0])
        if not self.commands:
            raise SystemExit(f"check-docs: `{binary} help` lists no commands:\n{top}")
        self.flags = {c: set(re.findall(r"^\s+(--[a-z0-9-]+)", self.run("help", c), re.M))
                      for c in self.commands if c != "help"}
        self.flags["help"] = set()
        self.all_flags = set().union(*self.flags.values())

    def run(self, *args):
        p = subprocess.run([self.bin] + list(args), capture_output=True, text=True, timeout=30)
        return p.stdout


def pingvas_commands(code):
    """Yields (command, [flags]) for every pingvas invocation in a piece of code."""
    code = re.sub(r"(^|\s)#.*$", "", code)  # shell comments
    for seg in re.split(r"&&|\|\||[|;]|\$\(|\)|`", code):
        try:
            words = shlex.split(seg, posix=True)
        except ValueError:
            words = seg.split()
        # The program is the first word (after VAR=value and PREFIXES), or the first word after
        # `--` (`kubectl exec POD -- pingvas token NAME`); elsewhere "pingvas" is an argument.
        starts = [0] + [i + 1 for i, w in enumerate(words) if w == "--"]
        for i in starts:
            while i < len(words) and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]) or
                                      words[i] in PREFIXES):
                i += 1
            if i + 1 < len(words) and os.path.basename(words[i]) == "pingvas":
                rest = words[i + 1:]
                if re.match(r"^[a-z][a-z-]*$", rest[0]):
                    yield rest[0], [FLAG.match(x).group(0) for x in rest[1:] if FLAG.match(x)]


def check_flags(path, text, help_, problems):
    for n, code in code_pieces(text):
        for cmd, flags in pingvas_commands(code):
            if cmd not in help_.flags:
                if not flags:
                    continue  # prose in a code span ("pingvas synthetic backend"), not a command
                problems.append(f"{path}:{n}: `pingvas {cmd}`: no such command "
                                f"(pingvas help lists {', '.join(help_.commands)})")
                continue
            for f in flags:
                if f not in help_.flags[cmd] and f != "--help":
                    problems.append(f"{path}:{n}: `pingvas {cmd} ... {f}`: "
                                    f"`pingvas help {cmd}` lists no {f}")
        m = FLAG.match(code.strip())
        if m and "pingvas" not in code:
            f = m.group(0)
            if f not in help_.all_flags and f not in FOREIGN_FLAGS:
                problems.append(f"{path}:{n}: `{f}` is no flag of any pingvas command; if it "
                                f"belongs to another program, show it in that program's "
                                f"command or add it to FOREIGN_FLAGS in scripts/check-docs.py")


def check_labels(path, text, build_dir, optional, problems, cache):
    for n, line in enumerate(text.split("\n"), 1):
        for m in CTEST_L.finditer(line):
            label = m.group(1).strip("`'\")")
            if label in optional:
                continue
            if label not in cache:
                p = subprocess.run(["ctest", "-N", "-L", label], cwd=build_dir,
                                   capture_output=True, text=True, timeout=60)
                t = re.search(r"Total Tests:\s*(\d+)", p.stdout)
                cache[label] = int(t.group(1)) if t else 0
            if cache[label] == 0:
                problems.append(f"{path}:{n}: `ctest -L {label}` selects no test in "
                                f"{build_dir}")


def anchors(text):
    """GitHub's heading anchors of a Markdown text."""
    out, seen = set(), {}
    in_fence = False
    for line in text.split("\n"):
        if FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def check_links(root, path, text, problems):
    base = os.path.dirname(os.path.join(root, path))
    in_fence = False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            in_fence = not in_fence
        if in_fence:
            continue
        for m in LINK.finditer(INLINE.sub("", line)):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            file_part, _, frag = target.partition("#")
            dest = os.path.normpath(os.path.join(base, file_part)) if file_part else \
                os.path.join(root, path)
            if not os.path.exists(dest):
                problems.append(f"{path}:{n}: link to {target}: no such file")
            elif frag and dest.endswith(".md"):
                if frag.lower() not in anchors(open(dest, encoding="utf-8").read()):
                    problems.append(f"{path}:{n}: link to {target}: no heading with anchor "
                                    f"#{frag} in {os.path.relpath(dest, root)}")


def check_layout(root, problems):
    text = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    m = re.search(r"^## Layout\n(.*?)(?=^## )", text, re.M | re.S)
    if not m:
        problems.append("README.md: no '## Layout' section")
        return
    named = set(re.findall(r"`([A-Za-z0-9_./-]+\.c)`", m.group(1)))
    for d, _, names in os.walk(os.path.join(root, "src")):
        for name in sorted(names):
            if name.endswith(".c") and name not in named:
                rel = os.path.relpath(os.path.join(d, name), root)
                problems.append(f"README.md: the Layout section does not name {rel}")


def check_commands(root, help_, problems):
    text = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    m = re.search(r"^## Commands\n(.*?)(?=^## )", text, re.M | re.S)
    named = set(re.findall(r"^\| `pingvas ([a-z-]+)", m.group(1), re.M)) if m else set()
    for c in help_.commands:
        if c not in named:
            problems.append(f"README.md: the Commands table has no row for `pingvas {c}`")


def check_schema(root, problems):
    path = "docs/operations.md"
    try:
        text = open(os.path.join(root, path), encoding="utf-8").read()
    except OSError:
        return
    for name, src in (("SQLite", "store_sqlite.c"), ("PostgreSQL", "store_pg.c")):
        m = re.search(r"#define SCHEMA_VERSION (\d+)",
                      open(os.path.join(root, "src", "store", src), encoding="utf-8").read())
        listed = sorted(int(v) for v in re.findall(r"^\| %s \| (\d+) \|" % name, text, re.M))
        want = list(range(1, int(m.group(1)) + 1)) if m else []
        if listed != want:
            problems.append(f"{path}: the schema table lists {name} versions {listed}; "
                            f"src/store/{src} has 1 to {want[-1] if want else '?'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the pingvas binary")
    ap.add_argument("--build-dir", required=True, help="a configured build directory")
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    optional = set(filter(None, os.environ.get("PINGVAS_DOCCHECK_OPTIONAL_LABELS", "").split(";")))
    help_ = Help(args.bin)
    problems, cache = [], {}
    files = tracked_markdown(root)
    for path in files:
        text = open(os.path.join(root, path), encoding="utf-8").read()
        check_flags(path, text, help_, problems)
        check_labels(path, text, args.build_dir, optional, problems, cache)
        check_links(root, path, text, problems)
    check_layout(root, problems)
    check_commands(root, help_, problems)
    check_schema(root, problems)
    for p in problems:
        print(p)
    print(f"check-docs: {len(files)} documents, {len(help_.commands)} commands, "
          f"{len(help_.all_flags)} flags, labels {sorted(cache)}: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
