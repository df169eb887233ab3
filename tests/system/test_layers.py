"""scripts/check-layers catches what issue 16 says it must (docs/design.md, "Layers: who may
call whom"): a call to a layer above, a call to a peer, two files calling each other, a function
without its part's prefix, a file in no layer, a call to a part above, a part of several files
without a table, and a call through a table of function pointers; and the real tree passes.

The made-up trees are a few lines of C in a temporary folder, with their own table: no build is
needed, and the whole file runs in well under two seconds."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOL = ROOT / "scripts" / "check-layers"

TABLE = """# a made-up design.md

```layers
parts
  cli
  store
  base

store
  top
  mid1 mid2
  low
```
"""

# Every fault once. store: top > mid1 | mid2 > low; stray.c in no layer; base calls up into
# store and defines a function without om_; cli has two files and no table.
BROKEN = {
    "store/top.c": "const int store_top_ops = 1;\n"
                   "int store_top(void) { return store_mid1() + store_mid2(); }\n",
    "store/mid1.c": "int store_mid1(void) { return store_mid2(); }\n",  # a peer
    "store/mid2.c": "int store_mid2(void) { return store_low(); }\n",
    "store/low.c": "int store_low(void) { return 0; }\n"
                   "int store_low_up(void) { return store_top() + store_top_ops; }\n"  # up
                   "int store_low_back(void) { return store_mid2(); }\n",  # up, and a circle
    "store/stray.c": "int store_stray(void) { return 0; }\n",
    "base/b.c": "int make_thing(void) { return 1; }\n"
                "int om_b(void) { return store_low(); }\n",
    "cli/one.c": "int cli_one(void) { return cli_two(); }\n",
    "cli/two.c": "int cli_two(void) { return om_b(); }\n",
}

# The same parts with every call going down (cli of one file needs no table).
CLEAN = {
    "store/top.c": "int store_top(void) { return store_mid1() + store_mid2(); }\n",
    "store/mid1.c": "int store_mid1(void) { return store_low(); }\n",
    "store/mid2.c": "/* store_top() in a comment is no call */\n"
                    "static int up(void) { return 0; }\n"
                    "int store_mid2(void) { return up() + store_low() + om_b(); }\n",
    "store/low.c": "int store_low(void) { return 0; }\n",
    "base/b.c": "int om_b(void) { return 1; }\n",
    "cli/one.c": "int main(void) { return store_top(); }\n",
}


def check_layers(tmp, files):
    src = tmp / "src"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    (tmp / "design.md").write_text(TABLE)
    r = subprocess.run([sys.executable, TOOL, "--table", tmp / "design.md", "--src", src],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout


def test_every_way_of_breaking_the_layers_is_reported(tmp_path):
    rc, out = check_layers(tmp_path, BROKEN)
    assert rc == 1, out
    expected = [
        "src/store/low.c calls store_top, store_top_ops of src/store/top.c, a layer above\n",
        "src/store/mid1.c calls store_mid2 of src/store/mid2.c, its peer\n",
        "src/store/low.c calls store_mid2 of src/store/mid2.c, a layer above (and is called "
        "back: a circle)\n",
        "src/base/b.c defines make_thing: its part base takes the prefix om_\n",
        "src/store/stray.c is in no layer of the table for store\n",
        "src/base/b.c (base) calls store_low of src/store/low.c (store, above it)\n",
        "src/cli has 2 files and no table",
    ]
    for line in expected:
        assert line in out, f"not reported: {line!r}\n{out}"
    assert f"FAILED, {len(expected)} calls or entries break the layers" in out, out


def test_a_tree_whose_calls_all_go_down_passes(tmp_path):
    rc, out = check_layers(tmp_path, CLEAN)
    assert rc == 0, out
    assert out.rstrip().endswith("check-layers: every call goes down"), out
    assert "store: 4 files in 3 layers, 4 file pairs calling inside it, top to bottom: " \
           "top > mid1 | mid2 > low" in out, out
    assert "cli: one file (one), no table needed" in out, out


def test_a_table_listing_a_part_twice_is_refused(tmp_path):
    (tmp_path / "design.md").write_text(TABLE.replace("  low\n", "  low\n\nstore\n  low\n"))
    r = subprocess.run([sys.executable, TOOL, "--table", tmp_path / "design.md", "--src",
                        tmp_path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "store is listed twice" in r.stderr, r.stdout + r.stderr


def test_the_real_tree_passes():
    r = subprocess.run([sys.executable, TOOL], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    # One line per part of the table, tabled or not.
    for part in ("cli", "daemons", "backup", "store", "check", "vss", "engine", "base"):
        assert f"\ncheck-layers: {part}: " in r.stdout, r.stdout
