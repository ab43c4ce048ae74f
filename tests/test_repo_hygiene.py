"""The repository stands alone: nothing in it points at files outside it.

A path such as `../<sibling>/...`, a home or workspace directory of the machine a file was
written on, or a design document that is not in the repository means a reader (or a tool)
of this repository meets a reference they cannot follow. Every tracked text file, and every
new file not yet committed (untracked but not ignored), is scanned. Binary files (NUL
bytes) are skipped. Standard install locations (/usr/local/cuda, /kaggle/input on Kaggle)
are facts about other machines, not references to this one, and are allowed.

The patterns are assembled from pieces below so that this file does not match itself.
"""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (pattern, why it is refused)
FORBIDDEN = [
    (re.escape(".." + "/shared"), "a sibling directory outside the repository"),
    (r"(?<![\w.])/" + "work/", "a workspace path of the development machine"),
    (r"(?<![\w.])/" + "root/", "root's home directory"),
    (r"(?<![\w.])/" + r"home/\w", "a user's home directory"),
    (r"(?<![\w.])/" + r"Users/\w", "a user's home directory (macOS)"),
    (r"\b" + "[A-Z]:" + r"\\\\?Users\\", "a user's home directory (Windows)"),
]
# Design documents that live outside the repository: named only if the repository has them.
OUTSIDE_DOCUMENTS = ["DESIGN" + ".md", "REFERENCES" + ".md", "STYLE" + ".md"]

SKIP_DIRS = {".git", "build", "__pycache__", ".pytest_cache", "dist"}


def repository_files():
    """Paths (relative to ROOT) of tracked files and of untracked, non-ignored ones."""
    if shutil.which("git") and os.path.exists(os.path.join(ROOT, ".git")):  # a dir, or a worktree's file
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
        return sorted({p for p in out.decode("utf-8", "surrogateescape").split("\0") if p})
    # Not a git checkout (an unpacked sdist, say): walk the tree without build outputs.
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            if not name.endswith((".so", ".o", ".pyc")):
                found.append(os.path.relpath(os.path.join(dirpath, name), ROOT))
    return sorted(found)


def outside_references(text, present_documents=()):
    """[(line number, line, reason)] for every reference in `text` that leaves the repository."""
    hits = []
    documents = [d for d in OUTSIDE_DOCUMENTS if d not in present_documents]
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in FORBIDDEN:
            if re.search(pattern, line):
                hits.append((number, line.strip(), why))
        for doc in documents:
            if re.search(r"(?<![\w/])" + re.escape(doc), line):
                hits.append((number, line.strip(), f"{doc} is not in the repository (point to docs/)"))
    return hits


def read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", "replace")


def test_the_detector_finds_each_kind_of_reference():
    samples = {
        "see " + ".." + "/shared/tools/x.sh": 1,
        "PY=/" + "root/.cache/venv/bin/python": 1,
        "open('/" + "work/wt/branch/file')": 1,
        "cd /" + "home/alice/src": 1,
        "the spec (" + "DESIGN" + ".md section 4)": 1,
        "CUDA_HOME=/usr/local/cuda; data in /kaggle/input/cod10k": 0,
        "x = a/" + "work/b; docs/model.md; ./root/ is relative": 0,
    }
    for text, expected in samples.items():
        assert len(outside_references(text)) == expected, (text, outside_references(text))
    # A design document the repository holds may be named.
    assert outside_references("see " + "STYLE" + ".md", present_documents={"STYLE" + ".md"}) == []


def test_nothing_in_the_repository_points_outside_it():
    files = repository_files()
    assert "README.md" in files and "setup.py" in files, f"unexpected file list from {ROOT}: {files[:5]}"
    present = {os.path.basename(p) for p in files}
    problems = []
    for rel in files:
        path = os.path.join(ROOT, rel)
        if not os.path.isfile(path):
            continue  # deleted in the worktree but still tracked
        text = read_text(path)
        if text is None:
            continue
        for number, line, why in outside_references(text, present):
            problems.append(f"{rel}:{number}: {why}: {line[:120]}")
    if problems:
        pytest.fail("references that leave the repository (use a path inside it, "
                    "tools/reference-python.sh, or docs/):\n" + "\n".join(problems))


def test_markdown_links_inside_the_repository_resolve():
    """README and docs/ link to each other by relative path; a renamed page breaks a link."""
    pages = [p for p in repository_files() if p.endswith(".md") and (p == "README.md" or p.startswith("docs/"))]
    assert "docs/README.md" in pages, "docs/README.md is missing"
    broken = []
    for rel in pages:
        text = read_text(os.path.join(ROOT, rel)) or ""
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(rel), target.split("#")[0]))
            if not os.path.exists(path):
                broken.append(f"{rel}: ({target})")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


# Committed fixtures stay small: a clone should not carry megabytes of reference data per file
# (tests/data/backbone/README.md says how its larger fixtures sample gradients instead).
MAX_FILE_BYTES = 4 << 20


def test_no_repository_file_exceeds_the_size_limit():
    sizes = {p: os.path.getsize(os.path.join(ROOT, p)) for p in repository_files()
             if os.path.isfile(os.path.join(ROOT, p))}
    assert sizes, "no repository files found"
    too_big = {p: s for p, s in sizes.items() if s > MAX_FILE_BYTES}
    assert not too_big, f"files over {MAX_FILE_BYTES >> 20} MiB: {too_big}"
