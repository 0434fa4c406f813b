"""nnlab.imports.run_plugins: what a command on a stored run imports of the plugins the run's config lists."""

import sys

import pytest

from nnlab.errors import NnlabError
from nnlab.imports import import_plugins, run_plugins


@pytest.fixture
def plugin(tmp_path):
    """(plugin file, marker): the file appends a line to the marker each time it is imported."""
    marker, path = tmp_path / "listed.imported", tmp_path / "listed.py"
    path.write_text(f"with open({str(marker)!r}, 'a') as f:\n    f.write('imported\\n')\n")
    yield path, marker
    sys.modules.pop("nnlab_plugin_listed", None)


def test_a_run_listing_no_plugins_needs_no_option():
    run_plugins([], run_id="r1")


def test_a_listed_plugin_neither_passed_nor_trusted_is_refused_naming_each_and_not_imported(plugin):
    path, marker = plugin
    with pytest.raises(NnlabError) as err:
        run_plugins([str(path), "planted_module"], run_id="r1")
    message = str(err.value)
    assert message.startswith(f"Run r1's config lists plugins {path}, planted_module,")
    assert f"pass --plugins {path} planted_module (your own copy) or --trust-plugins" in message
    assert "\n" not in message and not marker.exists() and "planted_module" not in sys.modules


def test_another_passed_plugin_does_not_cover_a_listed_one_but_is_imported(plugin, tmp_path):
    path, marker = plugin
    mine = tmp_path / "mine" / "other.py"
    mine.parent.mkdir()
    mine.write_text("")
    try:
        with pytest.raises(NnlabError, match="lists plugin .*listed.py"):
            run_plugins([str(path)], [str(mine)], run_id="r1")
        assert "nnlab_plugin_other" in sys.modules and not marker.exists()
    finally:
        sys.modules.pop("nnlab_plugin_other", None)


def test_the_users_copy_with_the_listed_file_name_covers_the_runs_path(plugin, tmp_path):
    path, marker = plugin
    run_plugins(["/somewhere/else/listed.py"], [str(path)], run_id="r1")
    assert marker.read_text() == "imported\n"


def test_trust_plugins_imports_what_the_run_lists(plugin):
    path, marker = plugin
    run_plugins([str(path)], trust=True, run_id="r1")
    assert marker.read_text() == "imported\n"


def test_a_plugin_this_process_imported_already_is_not_imported_again_nor_refused(plugin):
    path, marker = plugin
    import_plugins([str(path)])  # e.g. the user's own training in this process
    run_plugins([str(path)], run_id="r1")
    run_plugins([str(path)], [str(path)], run_id="r1")
    run_plugins(["json"], run_id="r1")  # a module imported already
    assert marker.read_text() == "imported\n"
