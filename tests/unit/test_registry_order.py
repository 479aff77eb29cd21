"""Listings (menus, CLI, the README's tables) are the same whichever module was imported first: a test, a page
or a script that imports one method's or dataset's module before the registry is read does not reorder them."""
import json
import subprocess
import sys

LIST = ("from explorer.kd import list_methods; from explorer.schemes import list_schemes; "
        "from explorer.data import list_datasets; import json; "
        "print(json.dumps([list_methods(), list_schemes(), list_datasets()]))")


def listing(first_imports: str) -> list:
    out = subprocess.run([sys.executable, "-c", f"{first_imports}\n{LIST}"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_listing_does_not_depend_on_what_was_imported_first():
    plain = listing("")
    # minillm imports kd/rkl.py, and data/text.py registers pydoc, before either registry discovers its package
    assert listing("import explorer.schemes.minillm, explorer.kd.wttm, explorer.data.text") == plain
    methods = plain[0]
    assert methods.index("gkd") < methods.index("rkl")   # module order (gkd.py, rkl.py) within one category
