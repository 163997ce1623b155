"""The Vega bundle every report inlines is built once per vl-convert version and kept on disk."""

import pytest
import vl_convert

from raybench.report import html

BUNDLE = "window.vega = {};  // '</script>' inside a string"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYBENCH_CACHE", str(tmp_path / "cache"))
    builds = []

    def build():
        builds.append(1)
        return BUNDLE

    monkeypatch.setattr(vl_convert, "javascript_bundle", build)
    html.vega_bundle.cache_clear()  # as a new process finds it
    yield tmp_path / "cache", builds
    html.vega_bundle.cache_clear()  # the next caller gets the real one


def kept(cache_dir):
    return cache_dir / f"vega-bundle-{vl_convert.__version__}.js"


def test_the_first_report_builds_it_and_later_processes_read_it(cache):
    cache_dir, builds = cache
    first = html.vega_bundle()
    assert first == BUNDLE.replace("</script", "<\\/script")  # cannot close the page's script element
    assert kept(cache_dir).read_text() == first and len(builds) == 1
    html.vega_bundle.cache_clear()
    assert html.vega_bundle() == first and len(builds) == 1
    assert [p.name for p in cache_dir.iterdir()] == [kept(cache_dir).name]  # no temporary file left


def test_an_empty_kept_bundle_is_built_again(cache):
    cache_dir, builds = cache
    cache_dir.mkdir()
    kept(cache_dir).write_text("")
    assert html.vega_bundle() == BUNDLE.replace("</script", "<\\/script") and len(builds) == 1
    assert kept(cache_dir).read_text() == html.vega_bundle()


def test_a_cache_that_cannot_be_written_costs_only_the_rebuild(cache):
    cache_dir, builds = cache
    cache_dir.write_text("a file where the folder would be")
    assert html.vega_bundle() == BUNDLE.replace("</script", "<\\/script")
    html.vega_bundle.cache_clear()
    assert html.vega_bundle() and len(builds) == 2
    assert cache_dir.read_text() == "a file where the folder would be"


def test_the_cache_folder_follows_xdg_without_raybench_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert html._cache_dir() == tmp_path / "raybench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert html._cache_dir() == tmp_path / "home" / ".cache" / "raybench"


def test_without_a_home_directory_the_bundle_is_built_and_not_kept(cache, monkeypatch):
    _, builds = cache
    monkeypatch.delenv("RAYBENCH_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(html.Path, "home", staticmethod(no_home))
    assert html._cache_dir() is None
    assert html.vega_bundle() == BUNDLE.replace("</script", "<\\/script") and len(builds) == 1
