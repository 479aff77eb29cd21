"""Security: nothing from a browser reaches code execution, and names cannot escape their folders.

1. A static scan (ast) of explorer/, pages/ and Home.py for the calls that run code from data:
   eval/exec, pickle.load(s) (the restricted CIFAR unpickler is the one exception, by construction),
   torch.load without weights_only=True, yaml.load without a safe loader, os.system/os.popen,
   subprocess with shell=True, importlib.import_module outside the CLI-gated custom-model loader.
2. safe_name, upload names and the store's run folders / delete_run resist path traversal.
3. The app binds to 127.0.0.1 unless told otherwise.
4. Custom model code ("import:pkg.module:factory") runs only from the CLI with --allow-custom-code.
"""
import ast
import json
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from explorer import cli
from explorer.config import ConfigError, RunConfig
from explorer.store import Store, safe_name
from explorer.uploads import clean_filename

REPO = Path(__file__).resolve().parents[2]
SCANNED = [REPO / "explorer", REPO / "pages", REPO / "Home.py"]
# (file relative to the repo, enclosing function) allowed to make an otherwise-flagged call, and why
ALLOWED = {
    ("explorer/custom_code.py", "custom_model_factory", "importlib.import_module"):
        "imports the user's own model code, only for configs given --allow-custom-code on the CLI",
    ("explorer/registry.py", "_discover", "importlib.import_module"):
        "imports the modules found in a registry's own package folder (explorer.kd, ...), named in the source",
}
SHELL_ALWAYS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
                "asyncio.create_subprocess_shell", "commands.getoutput"}
UNPICKLE = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load",
            "cPickle.loads", "dill.load", "dill.loads", "joblib.load", "shelve.open", "marshal.load", "marshal.loads",
            "pandas.read_pickle", "jsonpickle.decode"}


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def scan_source(source: str, filename: str) -> list[str]:
    """'file:line: what' for every dangerous call in one module's source."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}   # local name -> what it really is ("p" -> "pickle", "loads" -> "pickle.loads")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    aliases.setdefault("pd", "pandas")
    found = []

    def visit(node, func_name):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func_name
            if isinstance(child, ast.Call):
                check(child, func_name)
            visit(child, name)

    def check(call: ast.Call, func_name):
        raw = _dotted(call.func)
        if raw is None:
            return
        head, _, rest = raw.partition(".")
        full = aliases.get(head, head) + (f".{rest}" if rest else "")
        problem = None
        if isinstance(call.func, ast.Name) and full in ("eval", "exec", "compile", "__import__", "builtins.eval",
                                                          "builtins.exec"):
            problem = f"{full}() runs code from a string"
        elif full in ("builtins.eval", "builtins.exec"):
            problem = f"{full}() runs code from a string"
        elif full in UNPICKLE:
            problem = f"{full}() can run code hidden in the data (use RestrictedUnpickler or weights_only)"
        elif full == "torch.load" and not _is_const(_kw(call, "weights_only"), True):
            problem = "torch.load without weights_only=True can run code hidden in a checkpoint"
        elif full in ("yaml.load", "yaml.load_all") and not (
                (lambda v: v is not None and (_dotted(v) or "").endswith(("SafeLoader", "CSafeLoader")))(
                    _kw(call, "Loader") or (call.args[1] if len(call.args) > 1 else None))):
            problem = f"{full} without SafeLoader can construct arbitrary objects (use yaml.safe_load)"
        elif full in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
            problem = f"{full} can construct arbitrary objects"
        elif full in ("numpy.load", "np.load") and not _is_const(_kw(call, "allow_pickle"), False) \
                and _kw(call, "allow_pickle") is not None:
            problem = "numpy.load with allow_pickle can run code hidden in the data"
        elif full in SHELL_ALWAYS:
            problem = f"{full}() runs a shell"
        elif full.startswith("subprocess.") and _kw(call, "shell") is not None \
                and not _is_const(_kw(call, "shell"), False):
            problem = f"{full}(shell=...) runs a shell"
        elif full in ("importlib.import_module", "importlib.__import__", "runpy.run_path", "runpy.run_module"):
            problem = f"{full}() imports code named at run time"
        if problem and (filename, func_name, full) not in ALLOWED:
            found.append(f"{filename}:{call.lineno}: {problem}")

    visit(tree, None)
    return found


def _sources():
    for root in SCANNED:
        files = [root] if root.is_file() else sorted(root.rglob("*.py")) if root.is_dir() else []
        for f in files:
            yield str(f.relative_to(REPO)), f.read_text()


def test_no_code_execution_sinks_in_the_source_tree():
    scanned = list(_sources())
    assert len(scanned) > 40   # the scan really covers the package (and the app where it exists)
    problems = [p for name, src in scanned for p in scan_source(src, name)]
    assert not problems, "dangerous calls:\n" + "\n".join(problems)


def test_the_scanner_catches_each_pattern():
    """The scan above is only worth something if it sees these."""
    bad = textwrap.dedent("""
        import pickle, subprocess, os, torch, yaml, importlib
        import pickle as p
        from pickle import loads as L
        from os import system
        def f(s, path):
            eval(s); exec(s)
            pickle.load(open(path, "rb")); p.loads(s); L(s)
            torch.load(path); torch.load(path, weights_only=False)
            yaml.load(s); yaml.load(s, Loader=yaml.Loader); yaml.unsafe_load(s)
            os.system(s); system(s); os.popen(s)
            subprocess.run(s, shell=True); subprocess.Popen(s, shell=flag)
            importlib.import_module(s)
            pickle.Unpickler(open(path, "rb")).load()
        """)
    found = scan_source(bad, "bad.py")
    assert len(found) == 17, "\n".join(found)
    assert found[0].startswith("bad.py:7:")
    good = textwrap.dedent("""
        import torch, yaml, subprocess, pickle
        from explorer.data.cifar import RestrictedUnpickler
        def f(model, path, s):
            model.eval(); torch.load(path, map_location="cpu", weights_only=True)
            yaml.safe_load(s); yaml.load(s, Loader=yaml.SafeLoader)
            subprocess.run(["ls", s]); subprocess.call(["ls"], shell=False)
            RestrictedUnpickler(open(path, "rb")).load(); pickle.dumps(s)
        """)
    assert scan_source(good, "good.py") == []


def test_the_app_never_enables_custom_code():
    for name, src in _sources():
        if name.startswith(("pages", "Home")):
            assert "allow_custom_code" not in src, f"{name} mentions allow_custom_code"
            assert "import:" not in src, f"{name} builds an import: model spec"


# ---------------------------------------------------------------------- names and folders
@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", ".", "", "a/../../b", "..\\..\\x",
                                  "x\x00y", "\u202eexe.txt", "\uff0e\uff0e\uff0fetc", "~root", "-rf", " .. "])
def test_safe_name_cannot_traverse(name):
    for s in (safe_name(name), "-".join(clean_filename(name))):
        assert s and "/" not in s and "\\" not in s and "\x00" not in s and s not in (".", "..")
        assert not s.startswith((".", "-")) and all(c.isascii() and (c.isalnum() or c in "._-") for c in s)


def test_run_names_never_choose_folders_and_delete_run_stays_inside(tmp_path):
    store = Store(tmp_path / "home")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    ids = [store.create_run({"name": n, "dataset": "digits", "methods": []})
           for n in ("../../victim", str(victim), "..", "a/b")]
    for run_id in ids:
        run_dir = Path(store.get_run(run_id)["run_dir"])
        assert run_dir.parent == store.runs_dir and run_dir.name == run_id
    # a record whose run_dir points elsewhere (tampered, or a symlink) never deletes outside runs/
    store.update_run(ids[0], run_dir=str(victim))
    store.update_run(ids[1], run_dir=str(store.runs_dir / ".." / ".." / "victim"))
    link = store.runs_dir / "link"
    link.symlink_to(victim, target_is_directory=True)
    store.update_run(ids[2], run_dir=str(link))
    for run_id in ids:
        store.delete_run(run_id)
    assert (victim / "keep.txt").read_text() == "precious"
    assert store.list_runs() == []
    with pytest.raises(KeyError):
        store.delete_run("../../victim")


# ---------------------------------------------------------------------- binding
def test_app_binds_to_localhost_unless_told_otherwise():
    args = cli.build_parser().parse_args(["app"])
    assert args.host is None                            # left to Streamlit: STREAMLIT_SERVER_ADDRESS, else config.toml
    launcher = pytest.importorskip("explorer.app_launcher")
    cmd = launcher.streamlit_command()
    assert "--server.address" not in cmd                # so the app's config.toml below decides: 127.0.0.1
    assert launcher.effective_server(env={})[0] in ("127.0.0.1", "localhost")
    cmd = launcher.streamlit_command(host="0.0.0.0")   # told otherwise, explicitly
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    server = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]
    assert server.get("address", "127.0.0.1") in ("127.0.0.1", "localhost")
    # set explicitly, not left to Streamlit's defaults (which a new version could change)
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert server.get("maxUploadSize", 200) <= 1024   # MB


# ---------------------------------------------------------------------- what the browser can read
@pytest.fixture
def folders(tmp_path, monkeypatch):
    """A home with a data folder, a folder outside every allowed root, and symlinks both ways."""
    from explorer.data.idx import DEFAULT_FASHION_MNIST_ROOT
    home = tmp_path / "home"
    (home / "data" / "imgs" / "cats").mkdir(parents=True)
    outside = tmp_path / "secret"
    (outside / "cats").mkdir(parents=True)
    (home / "data" / "escape").symlink_to(outside, target_is_directory=True)   # inside by name, outside in fact
    (tmp_path / "alias").symlink_to(home / "data" / "imgs", target_is_directory=True)
    monkeypatch.setenv("KD_EXPLORER_HOME", str(home))
    monkeypatch.delenv("KD_EXPLORER_DATA_ROOTS", raising=False)
    return {"home": home, "outside": outside, "alias": tmp_path / "alias", "fashion": DEFAULT_FASHION_MNIST_ROOT,
            "tmp": tmp_path}


def test_data_folder_box_reads_only_allowed_roots(folders, monkeypatch):
    from explorer.app.roots import allowed_roots, check_data_root, is_allowed
    home, outside = folders["home"], folders["outside"]
    assert is_allowed(home / "data" / "imgs", "folder") and is_allowed(home / "data", "folder")
    assert is_allowed(folders["alias"], "folder")                                  # a symlink into the data folder
    assert is_allowed(folders["fashion"], "fashion-mnist") and not is_allowed(folders["fashion"], "folder")
    for refused in ("/", "/etc", str(outside), str(home / "data" / "escape"), str(home / "data" / ".." / ".."),
                    str(home), "~", "relative/path", "/nonexistent/x", "a\x00b"):
        assert not is_allowed(refused, "folder"), refused
        with pytest.raises(ConfigError) as e:
            check_data_root(refused, "folder")
        msg = str(e.value)
        assert e.value.field == "data_root" and str((home / "data").resolve()) in msg
        assert "cats" not in msg and "bin" not in msg and "does not exist" not in msg   # no listing, no probing
    monkeypatch.setenv("KD_EXPLORER_DATA_ROOTS", f"{outside}{__import__('os').pathsep}/nonexistent")
    assert is_allowed(outside / "cats", "folder") and outside.resolve() in allowed_roots("folder")


def test_the_train_form_refuses_a_server_folder_naming_the_allowed_roots(folders):
    from explorer.app import form as F
    state = {F.K + "dataset": "folder", F.K + "data_root": "/"}
    config, error = F.launchable(state)
    assert config is None and "data_root" in error and str((folders["home"] / "data").resolve()) in error
    assert "bin" not in error and "etc" not in error.replace(str(folders["tmp"]), "")   # no server listing
    state[F.K + "data_root"] = str(folders["outside"])
    assert F.launchable(state)[0] is None
    with pytest.raises(ConfigError, match="data_root"):
        F.config_from_form(state)
    state[F.K + "data_root"] = str(folders["home"] / "data" / "imgs")
    assert F.config_from_form(state)["data_root"] == str(folders["home"] / "data" / "imgs")


def test_app_data_roots_come_from_the_command_line(folders, monkeypatch):
    from explorer import app_launcher
    from explorer.app.roots import ENV, is_allowed
    args = cli.build_parser().parse_args(["app", "--data-root", str(folders["outside"]), "--data-root", "/srv"])
    assert args.data_root == [str(folders["outside"]), "/srv"]
    assert cli.build_parser().parse_args(["app"]).data_root == []
    env = app_launcher.app_environment(args.data_root, env={})
    assert env[ENV].split(__import__("os").pathsep) == [str(folders["outside"].resolve()), "/srv"]
    monkeypatch.setenv(ENV, env[ENV])   # what the Streamlit process sees
    assert is_allowed(folders["outside"] / "cats", "folder")
    calls = []
    monkeypatch.setattr(app_launcher.subprocess, "call", lambda *a, **kw: calls.append(kw) or 0)
    assert app_launcher.launch(data_roots=["/nonexistent-root"]) == 2 and not calls   # a typo is named, not ignored
    assert app_launcher.launch(data_roots=[str(folders["outside"])]) == 0
    assert str(folders["outside"].resolve()) in calls[0]["env"][ENV]


def test_the_cli_reads_any_folder(folders):
    """The command line is trusted: --data-root outside every app root is accepted as given."""
    from explorer.recipes import resolve
    cfg = resolve({"dataset": "folder", "data_root": str(folders["outside"])})
    assert cfg.data_root == str(folders["outside"])


# ---------------------------------------------------------------------- custom model code
CUSTOM = '''
import torch.nn as nn

class Net(nn.Module):
    """A model from outside the zoo: no kd_stages, no kd_embedding."""
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.head(self.features(x))

def make(num_classes, in_channels, image_size):
    return Net(num_classes, in_channels)
'''


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    (tmp_path / "kdx_custom_net.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "import:kdx_custom_net:make"
    sys.modules.pop("kdx_custom_net", None)


def test_custom_model_runs_from_the_cli_with_the_opt_in(custom_module, capsys):
    argv = ["run", "--dataset", "digits", "--student", custom_module, "--student-stages", "features.1,features.3",
            "--method", "kd", "--epochs", "1", "--n-train", "100", "--teacher-epochs", "1", "--json"]
    assert cli.main(argv + ["--allow-custom-code"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed" and 0 <= result["test_acc"] <= 1
    run = Store().get_run(result["run_id"])
    assert run["student"] == custom_module and run["config"]["student_stages"] == ["features.1", "features.3"]
    assert "allow_custom_code" not in run["config"]   # the opt-in is never stored: a re-queue cannot inherit it

    assert cli.main(argv) == cli.EXIT_USAGE            # the same command without the opt-in
    assert "'student'" in capsys.readouterr().err


def test_custom_model_is_refused_on_the_app_path(custom_module):
    data = {"dataset": "digits", "student": custom_module, "student_stages": ["features.1"], "epochs": 1}
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(data)   # what the app's widgets build
    assert e.value.field == "student" and "--allow-custom-code" in str(e.value)
    with pytest.raises(ConfigError):
        RunConfig.from_dict(data | {"allow_custom_code": True})   # not a field: a dict cannot switch it on
    jobs = pytest.importorskip("explorer.jobs")
    with pytest.raises(ConfigError):
        jobs.submit(data)   # the job queue the app submits to
    assert Store().list_runs() == []
    assert "kdx_custom_net" not in sys.modules   # refused before anything was imported
