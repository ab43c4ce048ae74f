#!/usr/bin/env python3
"""Reads ptxas's resource report and checks the kernels against our limits.

The report is what ptxas prints with -v: nvcc's --resource-usage (setup.py writes it to
$CODEXT_CUDA_RESOURCE_REPORT) or NVRTC's --ptxas-options=-v log (tools/nvrtc_check.py).
For each kernel and architecture it gives registers, stack frame, spill stores and loads,
and static shared memory. The limits (docs/cuda-build.md):
  - a kernel listed as hot (`// nvrtc-check: hot NAME ...` in kernels/device/) never spills;
  - no kernel uses more static shared memory than T4 (sm_75) gives a block: 48 KiB.

Usage: python3 tools/ptxas_usage.py REPORT [--sources kernels/device]
Prints one table row per kernel and exits 1 when a limit is broken, when the report holds
no kernel, or when a hot kernel of the sources is missing from it (a report that does not
cover the kernels proves nothing).
"""
import argparse
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys

# T4 (sm_75) and every architecture after it: 48 KiB of static shared memory per block
# (more only as dynamic shared memory, with an opt-in attribute).
STATIC_SHARED_LIMIT = 48 * 1024

ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
PROPERTIES = re.compile(r"Function properties for (\S+)")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers")
SMEM = re.compile(r"(\d+) bytes smem")
SECTION = re.compile(r"^# (\S+)\s*$")
DIRECTIVE = re.compile(r"^\s*//\s*nvrtc-check:\s*(\S+)(.*)$", re.M)
DIRECTIVE_KINDS = ("hot", "instantiate")


@dataclasses.dataclass
class Usage:
    """One kernel compiled for one architecture."""
    mangled: str
    arch: str
    source: str = ""
    registers: int = 0
    # None until the "bytes stack frame, ... spill loads" line under the kernel's
    # "Function properties" is read (a report without it cannot show spills)
    stack: int = None
    spill_stores: int = None
    spill_loads: int = None
    static_shared: int = 0
    name: str = ""   # demangled, without parameters: column_partials_kernel<true>
    base: str = ""   # without template arguments: column_partials_kernel


def parse(text, source=""):
    """Usage records of a ptxas -v report, in report order. Lines "# FILE" (setup.py's
    sections) set the source of the records that follow."""
    records, current, pending_frame = [], None, None
    for line in text.splitlines():
        section = SECTION.match(line)
        if section:
            source, current = section.group(1), None
            continue
        entry = ENTRY.search(line)
        if entry:
            current = Usage(entry.group(1), entry.group(2), source)
            records.append(current)
            pending_frame = None
            continue
        props = PROPERTIES.search(line)
        if props:
            # a called (not inlined) device function has properties too: not this entry's
            pending_frame = current if current and props.group(1) == current.mangled else None
            continue
        frame = FRAME.search(line)
        if frame:
            if pending_frame is not None:
                pending_frame.stack, pending_frame.spill_stores, pending_frame.spill_loads = (
                    int(g) for g in frame.groups())
            pending_frame = None
            continue
        used = USED.search(line)
        if used and current is not None:
            current.registers = int(used.group(1))
            smem = SMEM.search(line)
            current.static_shared = int(smem.group(1)) if smem else 0
    _name(records)
    return records


def demangle(names):
    """{mangled: demangled} by c++filt when it is there; else the names stay mangled."""
    names = sorted(set(names))
    tool = shutil.which("c++filt")
    if names and tool:
        res = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True,
                             text=True)
        out = res.stdout.splitlines()
        if res.returncode == 0 and len(out) == len(names):
            return dict(zip(names, out))
    return {n: n for n in names}


def _name(records):
    plain = demangle(r.mangled for r in records)
    for r in records:
        text = plain.get(r.mangled, r.mangled)
        # "void column_partials_kernel<true>(int, int, ...)" -> column_partials_kernel<true>
        m = re.match(r"^(?:void\s+)?([\w:]+(?:<[^(]*>)?)\(", text)
        if m:
            r.name = m.group(1)
            r.base = r.name.split("<", 1)[0]
        else:  # still mangled (no c++filt): the base name is _Z<length><name>...
            m = re.match(r"^_Z(\d+)(\w+)", text)
            r.name = text  # distinct per template instance
            r.base = m.group(2)[:int(m.group(1))] if m else text


def directives(text, path):
    """{"hot": set of kernel names, "instantiate": [name expressions]} of one device
    source, and a list of problems (unknown directive kinds)."""
    found, problems = {"hot": set(), "instantiate": []}, []
    for m in DIRECTIVE.finditer(text):
        kind, rest = m.group(1), m.group(2).split()
        line = text.count("\n", 0, m.start()) + 1
        if kind not in DIRECTIVE_KINDS:
            problems.append(f"{path}:{line}: unknown directive 'nvrtc-check: {kind}' "
                            f"(known: {', '.join(DIRECTIVE_KINDS)})")
        elif kind == "hot":
            found["hot"].update(rest)
        else:
            found["instantiate"] += rest
    return found, problems


def hot_kernels(sources_dir):
    """{kernel base name: source path} of every kernel listed as hot under sources_dir."""
    hot = {}
    for path in sorted(glob.glob(os.path.join(sources_dir, "*.cu*"))):
        with open(path, encoding="utf-8") as f:
            for name in directives(f.read(), path)[0]["hot"]:
                hot[name] = path
    return hot


def check(records, hot, shared_limit=STATIC_SHARED_LIMIT):
    """Problems (one line each) of the records against the limits; hot: kernel base names."""
    problems = []
    for r in records:
        where = f"{r.source}: " if r.source else ""
        if r.base in hot and r.spill_stores is None:
            problems.append(f"{where}hot kernel {r.name} has no spill information on {r.arch} "
                            "(the report lacks its 'bytes stack frame' line)")
        elif r.base in hot and (r.spill_stores or r.spill_loads):
            problems.append(f"{where}hot kernel {r.name} spills registers on {r.arch} "
                            f"({r.spill_stores} bytes stored, {r.spill_loads} bytes loaded, "
                            f"{r.registers} registers)")
        if r.static_shared > shared_limit:
            problems.append(f"{where}kernel {r.name} uses {r.static_shared} bytes of static "
                            f"shared memory on {r.arch}, above T4's {shared_limit} per block")
    return problems


def table(records, hot=()):
    """One row per kernel: per architecture registers, spilled bytes (stores + loads),
    stack frame and static shared memory."""
    archs = sorted({r.arch for r in records}, key=lambda a: int(re.sub(r"\D", "", a)))
    rows, seen = {}, []
    for r in records:
        key = (r.source, r.name)
        if key not in rows:
            rows[key] = {}
            seen.append(key)
        rows[key][r.arch] = r
    name_width = max([len("kernel")] + [len(k[1]) + 4 for k in seen])
    cell = "{:>4} {:>5} {:>5} {:>6}"
    head = f"{'kernel':<{name_width}}" + "".join(f" | {a:^23}" for a in archs)
    sub = " " * name_width + "".join(" | " + cell.format("regs", "spill", "stack", "smem")
                                     for _ in archs)
    lines, source = [head, sub], None
    for key in seen:
        if key[0] != source:
            source = key[0]
            lines.append(f"{source or '(no source)'}")
        base = next(iter(rows[key].values())).base
        label = "  " + key[1] + (" *" if base in hot else "")
        cells = []
        for a in archs:
            r = rows[key].get(a)
            if r is None:
                cells.append(f" | {'-':^23}")
                continue
            spill = "?" if r.spill_stores is None else r.spill_stores + r.spill_loads
            stack = "?" if r.stack is None else r.stack
            cells.append(" | " + cell.format(r.registers, spill, stack, r.static_shared))
        lines.append(f"{label:<{name_width}}" + "".join(cells))
    lines.append("(* hot: no spills allowed; spill = bytes stored + loaded; stack, smem "
                 "in bytes; smem is static shared memory, at most "
                 f"{STATIC_SHARED_LIMIT} per block)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", help="ptxas -v output (setup.py's "
                        "CODEXT_CUDA_RESOURCE_REPORT file)")
    parser.add_argument("--sources", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels", "device"),
        help="the device sources whose hot lists apply (default: kernels/device)")
    args = parser.parse_args(argv)
    try:
        with open(args.report, encoding="utf-8", errors="replace") as f:
            records = parse(f.read())
    except OSError as e:
        print(f"ptxas_usage: cannot read the report {args.report}: {e.strerror}")
        return 1
    hot = hot_kernels(args.sources)
    if records:
        print(table(records, hot))
    problems = check(records, hot)
    if not records:
        problems.append(f"{args.report} holds no kernel (was the build run with "
                        "CODEXT_CUDA_RESOURCE_REPORT set?)")
    found = {r.base for r in records}
    for name in sorted(set(hot) - found):
        problems.append(f"hot kernel {name} ({hot[name]}) is not in the report {args.report}")
    for p in problems:
        print("FAILED:", p)
    print(f"{len({(r.source, r.name) for r in records})} kernel(s), "
          f"{len({r.arch for r in records})} architecture(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
