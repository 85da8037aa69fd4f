"""Fill-first routing of model requests (deployments/routing.rank): the pure rule."""

from voxray.deployments.routing import rank


def test_the_first_replica_takes_requests_until_it_holds_a_batch():
    assert rank(["b", "a"], {"a": 3, "b": 0}, fill=8) == [["a"], ["b"]]
    assert rank(["b", "a"], {"a": None, "b": 0}, fill=8) == [["a"], ["b"]]  # not seen lately: probe it


def test_a_full_first_replica_passes_requests_to_the_next():
    assert rank(["a", "b", "c"], {"a": 8, "b": 2, "c": 0}, fill=8) == [["b"], ["c"], ["a"]]


def test_all_full_goes_to_the_least_loaded():
    assert rank(["a", "b"], {"a": 12, "b": 9}, fill=8) == [["b"], ["a"]]


def test_a_dead_first_replica_is_simply_not_a_candidate():
    assert rank(["b"], {"a": 0, "b": 5}, fill=8) == [["b"]]
