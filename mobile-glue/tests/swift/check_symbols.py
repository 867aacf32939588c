"""Checks that the Swift wrapper sources (mobile-glue/swift/Sources/TidingsAsync) use only
symbols the generated Swift bindings declare, with the argument labels they declare.

No Swift compiler runs on the CI machine, so this is what stands between a renamed or
re-labelled SDK function and a wrapper that no longer compiles. It reads the generated
TidingsMobile.swift (types; their methods with argument labels, defaults allowed to be
left out; fields; enum cases; the protocols' requirements) and checks in every wrapper
source:

- `Type.member` for a generated type (e.g. `TidingsError.Cancelled`,
  `TidingsClient.open(...)`): the member exists (with these labels, for a call);
- `TidingsMobile.Name`: a generated type;
- every other capitalised name: a generated type, one the wrappers declare, or a Swift /
  Foundation name listed below;
- every call `.name(label: ...)` and `name(label: ...)` of a generated method or
  function: the labels fit one of its declarations;
- every other `.name`: a generated field, case or method, one the wrappers declare, or a
  listed Swift name;
- a wrapper type conforming to a generated protocol implements each requirement with the
  same name, labels and parameter types.

    python3 mobile-glue/tests/swift/check_symbols.py [--bindings TidingsMobile.swift] [SOURCE.swift ...]

`--self-test` first checks that the checker catches deliberate mistakes. Exits non-zero
naming each problem.
"""

import argparse
import glob
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DEFAULT_BINDINGS = os.path.join(ROOT, "mobile-glue", "bindings", "swift", "TidingsMobile.swift")
DEFAULT_SOURCES = os.path.join(ROOT, "mobile-glue", "swift", "Sources", "TidingsAsync", "*.swift")
MODULE = "TidingsMobile"

# Swift standard library and Foundation names the wrappers may use. A new one is added
# here on purpose, never by accident: a typo of a generated name must not pass.
SWIFT_TYPES = {
    "Any", "AnyObject", "Array", "AsyncIteratorProtocol", "AsyncSequence", "AsyncStream",
    "AsyncThrowingStream", "Bool", "CancellationError", "Continuation", "Data", "Dictionary",
    "Element", "Error", "Foundation", "Int", "Int32", "Int64", "Iterator", "MainActor",
    "NSLock", "Never", "Optional", "Result", "Self", "Sendable", "Set", "String", "T", "Task",
    "UInt", "UInt32", "UInt64", "UInt8", "UUID", "Void",
}
SWIFT_MEMBERS = {
    "append", "bufferingNewest", "bufferingOldest", "cancel", "count", "finish", "first",
    "init", "isCancelled", "isEmpty", "lock", "map", "onTermination", "remove", "self",
    "unbounded", "unlock", "values", "yield",
}
KEYWORDS = {"Type", "Protocol"}


def strip_code(text):
    """Source without comments and string literals (their contents are not code)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)
    return text


def block_end(text, open_brace):
    """Index just past the brace that closes the one at `open_brace`."""
    depth = 0
    for i in range(open_brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def split_top(params):
    """Splits a parameter or argument list at the commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in params:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def param_signature(params):
    """[(label, type, has_default)] of a declaration's parameter list."""
    out = []
    for p in split_top(params):
        if ":" not in p:
            # An enum case's unlabelled associated value.
            out.append(("_", normalise_type(p), False))
            continue
        names, rest = p.split(":", 1)
        label = names.split()[0].strip("`")
        default = "=" in rest
        ptype = rest.split("=", 1)[0].strip()
        ptype = re.sub(r"^(?:inout|__owned|@escaping|@Sendable)\s+", "", ptype)
        out.append((label, normalise_type(ptype), default))
    return out


def normalise_type(t):
    return re.sub(r"\s+", "", t.replace(MODULE + ".", ""))


def call_labels(args):
    """The argument labels of a call (`_` for an unlabelled argument)."""
    labels = []
    for a in split_top(args):
        m = re.match(r"^`?(\w+)`?\s*:(?!:)", a)
        labels.append(m.group(1) if m else "_")
    return labels


def labels_fit(declared, labels):
    """Whether a call with `labels` can call a declaration with parameters `declared`."""
    i = 0
    for label, _, default in declared:
        if i < len(labels) and labels[i] == label:
            i += 1
        elif not default:
            return False
    return i == len(labels)


class Declarations:
    """What a Swift file declares: types and their members."""

    def __init__(self):
        self.types = {}  # name -> kind
        self.members = {}  # type -> {name: [signature]}
        self.functions = {}  # top-level name -> [signature]
        self.protocols = {}  # name -> [(name, signature)]

    def all_member_names(self):
        names = set()
        for members in self.members.values():
            names.update(members)
        return names

    def signatures(self, name):
        found = list(self.functions.get(name, []))
        for members in self.members.values():
            found.extend(members.get(name, []))
        return found


DECL = re.compile(
    r"^[ \t]*(?:(?:public|open|private|fileprivate|internal|final|indirect)\s+)*"
    r"(protocol|class|struct|enum|extension)\s+(\w+)[^{\n]*\{",
    re.M,
)
FUNC = re.compile(r"(?:static\s+|class\s+)?func\s+`?(\w+)`?\s*(?:<[^>]*>)?\s*\(")
INIT = re.compile(r"\binit\??\s*\(")
PROP = re.compile(r"\b(?:var|let)\s+(\w+)")
CASE = re.compile(r"\bcase\s+(\w+)\s*(\()?")


def params_at(text, open_paren):
    """The text inside the parentheses opening at `open_paren`."""
    depth = 0
    for i in range(open_paren, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[open_paren + 1 : i]
    return text[open_paren + 1 :]


def depth_one(body):
    """The parts of a type's body at its own level (nested bodies blanked)."""
    out, depth = [], 0
    for ch in body:
        if ch == "{":
            depth += 1
            out.append(" ")
        elif ch == "}":
            depth -= 1
            out.append(" ")
        else:
            out.append(ch if depth == 0 else ("\n" if ch == "\n" else " "))
    return "".join(out)


def parse(text, public_only):
    """Declarations of a Swift source (`public_only`: what another module can use)."""
    text = strip_code(re.sub(r"\bpublic\s*\n\s*", "public ", text))
    decls = Declarations()
    taken = []
    for m in DECL.finditer(text):
        kind, name = m.group(1), m.group(2)
        start = m.end() - 1
        end = block_end(text, start)
        if any(s < start < e for s, e in taken) and kind != "extension":
            # A type nested in another: its members belong to it, keep it as a name.
            decls.types.setdefault(name, kind)
        head = text[m.start() : m.end()]
        if public_only and kind != "extension" and not re.search(r"\b(?:public|open)\b", head):
            continue
        if kind != "extension":
            decls.types[name] = kind
        taken.append((start, end))
        body = depth_one(text[start + 1 : end - 1])
        members = decls.members.setdefault(name, {})
        for f in FUNC.finditer(body):
            paren = f.end() - 1
            sig = param_signature(params_at(body, paren))
            members.setdefault(f.group(1), []).append(sig)
            if kind == "protocol":
                decls.protocols.setdefault(name, []).append((f.group(1), sig))
        for i in INIT.finditer(body):
            members.setdefault("init", []).append(param_signature(params_at(body, i.end() - 1)))
        for p in PROP.finditer(body):
            members.setdefault(p.group(1), [])
        if kind == "enum":
            for c in CASE.finditer(body):
                sig = param_signature(params_at(body, c.end() - 1)) if c.group(2) else []
                members.setdefault(c.group(1), []).append(sig)
    # Top-level functions (outside every type body).
    outside = list(text)
    for s, e in taken:
        outside[s:e] = " " * (e - s)
    outside = "".join(outside)
    for f in re.finditer(r"(?:public\s+)?func\s+`?(\w+)`?\s*(?:<[^>]*>)?\s*\(", outside):
        if public_only and not outside[max(0, f.start() - 8) : f.start()].strip().endswith("public"):
            continue
        decls.functions.setdefault(f.group(1), []).append(param_signature(params_at(outside, f.end() - 1)))
    return decls


def check(generated, sources):
    """Problems found in `sources` ({path: text}) against the generated declarations."""
    problems = []
    wrapper = Declarations()
    parsed = {}
    for path, text in sources.items():
        d = parse(text, public_only=False)
        parsed[path] = d
        wrapper.types.update(d.types)
        for t, members in d.members.items():
            for n, sigs in members.items():
                wrapper.members.setdefault(t, {}).setdefault(n, []).extend(sigs)
        for n, sigs in d.functions.items():
            wrapper.functions.setdefault(n, []).extend(sigs)
    known_members = generated.all_member_names() | wrapper.all_member_names() | SWIFT_MEMBERS

    def fits(name, labels, where):
        sigs = generated.signatures(name) + wrapper.signatures(name)
        if not sigs:
            return False
        return any(labels_fit(s, labels) for s in sigs)

    for path, raw in sources.items():
        text = strip_code(raw)
        rel = os.path.relpath(path, ROOT) if os.path.isabs(path) else path

        def line_of(i):
            return text.count("\n", 0, i) + 1

        qualified_spans = set()
        # Type.member for generated types, and TidingsMobile.Type.
        for m in re.finditer(r"\b([A-Z]\w*)\.(\w+)(\s*\()?", text):
            owner, member, call = m.group(1), m.group(2), m.group(3)
            qualified_spans.add(m.start(2))
            if owner == MODULE:
                if member not in generated.types:
                    problems.append(f"{rel}:{line_of(m.start())}: {MODULE}.{member} is not a generated type")
                continue
            if owner not in generated.types:
                continue
            sigs = generated.members.get(owner, {}).get(member)
            if sigs is None and member not in generated.types:
                problems.append(f"{rel}:{line_of(m.start())}: {owner}.{member} is not in the generated {owner}")
            elif call and sigs:
                labels = call_labels(params_at(text, m.end() - 1))
                if not any(labels_fit(s, labels) for s in sigs):
                    problems.append(
                        f"{rel}:{line_of(m.start())}: {owner}.{member}({''.join(l + ':' for l in labels)}) "
                        "matches no generated declaration"
                    )
        # Capitalised names.
        for m in re.finditer(r"(?<![\w.])([A-Z]\w*)\b", text):
            name = m.group(1)
            if name in generated.types or name in wrapper.types or name in SWIFT_TYPES or name in KEYWORDS:
                continue
            if name == MODULE:
                continue
            problems.append(f"{rel}:{line_of(m.start())}: unknown type {name}")
        # Member accesses and calls: `.name`, `.name(label: ...)`.
        for m in re.finditer(r"(?<![\d.])\.(\w+)(\s*\()?", text):
            name, call = m.group(1), m.group(2)
            if m.start(1) in qualified_spans or name[0].isupper() or name.isdigit():
                continue
            if name not in known_members and name not in generated.functions:
                problems.append(f"{rel}:{line_of(m.start())}: .{name} is not a generated or known member")
                continue
            if call and (generated.signatures(name) or wrapper.signatures(name)):
                labels = call_labels(params_at(text, m.end() - 1))
                if not fits(name, labels, rel):
                    problems.append(
                        f"{rel}:{line_of(m.start())}: .{name}({''.join(l + ':' for l in labels)}) "
                        "matches no declaration"
                    )
        # Calls of generated functions: `name(label: ...)`.
        for m in re.finditer(r"(?<![\w.])([a-z_]\w*)\s*\(", text):
            name = m.group(1)
            if name not in generated.functions:
                continue
            if re.search(r"\b(?:func|case)\s*$", text[max(0, m.start() - 6) : m.start()]):
                continue  # a declaration, not a use
            labels = call_labels(params_at(text, m.end() - 1))
            if not fits(name, labels, rel):
                problems.append(
                    f"{rel}:{line_of(m.start())}: {name}({''.join(l + ':' for l in labels)}) matches no declaration"
                )
        # Conformance to generated protocols.
        for m in DECL.finditer(text):
            kind, name = m.group(1), m.group(2)
            if kind not in ("class", "struct"):
                continue
            head = text[m.start() : m.end()]
            body = text[m.end() - 1 : block_end(text, m.end() - 1)]
            conforms = re.search(r":([^{]*)\{", head)
            for proto in re.findall(r"\w+", conforms.group(1) if conforms else ""):
                for req_name, req_sig in generated.protocols.get(proto, []):
                    implemented = [
                        param_signature(params_at(body, f.end() - 1))
                        for f in FUNC.finditer(body)
                        if f.group(1) == req_name
                    ]
                    want = [(l, t) for l, t, _ in req_sig]
                    if not any([(l, t) for l, t, _ in sig] == want for sig in implemented):
                        problems.append(
                            f"{rel}:{line_of(m.start())}: {name} does not implement {proto}.{req_name}"
                            f"({', '.join(l + ': ' + t for l, t in want)})"
                        )
    return problems


SELF_TESTS = {
    "a wrong argument label": "func f(c: TidingsClient) async throws { _ = try await c.restoreAccount(phras: \"\") }",
    "a missing argument": "func f(c: TidingsClient) async throws { _ = try await c.waitForLink(cancel: nil) }",
    "a misspelt error case": "func f() { if case TidingsError.Canceled = TidingsError.Closed {} }",
    "a misspelt type": "func f(_ m: IncommingMessage) {}",
    "a misspelt field": "func f(_ m: IncomingMessage) -> String? { m.senderAcountId }",
    "a type not in the module": "func f(_ p: TidingsMobile.Progres) {}",
    "a listener with a wrong label": (
        "final class L: EventListener { func onMessage(msg: IncomingMessage) {} "
        "func onConfigChanged(change: ConfigChange) {} func onModeChanged(change: ModeChange) {} "
        "func onLinkRequest(request: LinkRequest) {} func onProgress(progress: TidingsMobile.Progress) {} }"
    ),
    "a static call with a wrong label": (
        "func f() async throws { _ = try await TidingsClient.open(dir: \"\", stateKey: Data(), relayUrl: \"\") }"
    ),
}


def self_test(generated):
    """Each deliberate mistake must be caught; a correct snippet must pass."""
    failures = 0
    for what, snippet in SELF_TESTS.items():
        if not check(generated, {"self-test.swift": snippet}):
            print(f"check_symbols.py: self-test: {what} was not caught")
            failures += 1
    good = (
        "func f(c: TidingsClient, k: Cancellation) async throws -> String {\n"
        "    _ = try await c.restoreAccount(phrase: \"\")\n"
        "    _ = c.modeStatus().mode\n"
        "    return try await c.restoreAccount(phrase: \"\", cancel: k)\n}"
    )
    if check(generated, {"self-test.swift": good}):
        print(f"check_symbols.py: self-test: correct code was flagged: {check(generated, {'self-test.swift': good})}")
        failures += 1
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bindings", default=DEFAULT_BINDINGS)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("sources", nargs="*")
    args = ap.parse_args()
    with open(args.bindings, encoding="utf-8") as f:
        generated = parse(f.read(), public_only=True)
    if not generated.members.get("TidingsClient"):
        print(f"check_symbols.py: no TidingsClient in {args.bindings}: is it the generated Swift?")
        return 1
    failed = 0
    passed = 0
    if args.self_test:
        n = self_test(generated)
        failed += n
        passed += len(SELF_TESTS) + 1 - n
    paths = args.sources or sorted(glob.glob(DEFAULT_SOURCES))
    sources = {}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            sources[p] = f.read()
    problems = check(generated, sources)
    for p in problems:
        print(f"check_symbols.py: {p}")
    if problems:
        failed += 1
    else:
        passed += 1
    print(
        f"check_symbols.py: {len(sources)} wrapper sources against {os.path.relpath(args.bindings, ROOT)}: "
        f"{len(problems)} problems"
    )
    print(f"swift wrapper symbols: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
