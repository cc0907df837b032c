"""Choosing a replica: least outstanding requests, ties in turn, a replica that did not answer skipped."""

from __future__ import annotations

from services.deployer.domain.balancer import ReplicaBalancer

URLS = ("http://a", "http://b", "http://c")


def test_idle_replicas_take_turns():
    balancer = ReplicaBalancer()
    assert [balancer.pick(URLS) for _ in range(6)] == ["http://a", "http://b", "http://c"] * 2


def test_the_replica_with_fewest_requests_in_flight_is_picked():
    balancer = ReplicaBalancer()
    for url in ("http://a", "http://a", "http://b", "http://c", "http://c"):
        balancer.started(url)
    assert {balancer.pick(URLS) for _ in range(5)} == {"http://b"}
    balancer.finished("http://a")
    balancer.finished("http://a")
    assert balancer.pick(URLS) == "http://a"


def test_a_replica_marked_down_is_skipped_unless_nothing_else_is_left():
    balancer = ReplicaBalancer(down_for_s=60)
    balancer.mark_down("http://b")
    assert "http://b" not in {balancer.pick(URLS) for _ in range(9)}
    assert balancer.pick(URLS, exclude="http://a") == "http://c"
    balancer.mark_down("http://c")
    assert balancer.pick(("http://b", "http://c"), exclude="http://c") == "http://b"
    assert balancer.pick(("http://a",), exclude="http://a") is None


def test_a_replica_comes_back_after_its_time_down():
    balancer = ReplicaBalancer(down_for_s=0)
    balancer.mark_down("http://b")
    assert "http://b" in {balancer.pick(URLS) for _ in range(3)}
