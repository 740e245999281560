"""The pending queue (domain/queue.py): priority, first come first served, eligibility classes."""

from datetime import UTC, datetime

from workfleet.domain.operations import Operation, Requirements
from workfleet.domain.queue import PendingQueue

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CPU = Requirements()
GPU = Requirements(gpu="required")


def make_op(
    operation_id: str,
    *,
    priority: int = 0,
    operation_type: str = "diagnostic",
    requirements: Requirements = CPU,
) -> Operation:
    return Operation(
        operation_id=operation_id,
        operation_type=operation_type,
        params={},
        owner="alice",
        created_at=T0,
        priority=priority,
        requirements=requirements,
    )


def queue_of(*ops: Operation) -> PendingQueue:
    queue = PendingQueue()
    for op in ops:
        queue.push(op)
    return queue


def drain_class(queue: PendingQueue, key: tuple[str, Requirements]) -> list[str]:
    """Pop one class in order, the way the dispatcher does: look at the heads, then pop."""
    order = []
    while any(head_key == key for head_key, _, _ in queue.heads()):
        order.append(queue.pop(key))
    return order


def heads_by_class(queue: PendingQueue) -> dict[tuple[str, Requirements], str]:
    return {key: operation_id for key, operation_id, _ in queue.heads()}


def test_a_higher_priority_operation_comes_out_first() -> None:
    queue = queue_of(make_op("low", priority=1), make_op("high", priority=9))
    assert drain_class(queue, ("diagnostic", CPU)) == ["high", "low"]


def test_operations_of_equal_priority_come_out_first_in_first_out() -> None:
    queue = queue_of(*(make_op(f"op{i}") for i in range(5)))
    assert drain_class(queue, ("diagnostic", CPU)) == [f"op{i}" for i in range(5)]


def test_priority_then_arrival_orders_a_mixed_class() -> None:
    queue = queue_of(
        make_op("a0", priority=0),
        make_op("b5", priority=5),
        make_op("c0", priority=0),
        make_op("d5", priority=5),
    )
    assert drain_class(queue, ("diagnostic", CPU)) == ["b5", "d5", "a0", "c0"]


def test_the_sort_key_of_a_head_puts_higher_priority_lower() -> None:
    queue = queue_of(make_op("cpu", priority=1), make_op("gpu", priority=7, requirements=GPU))
    keys = {operation_id: sort_key for _, operation_id, sort_key in queue.heads()}
    assert keys["gpu"] < keys["cpu"]


def test_operations_with_other_requirements_form_another_class() -> None:
    queue = queue_of(make_op("cpu"), make_op("gpu", requirements=GPU))
    assert heads_by_class(queue) == {("diagnostic", CPU): "cpu", ("diagnostic", GPU): "gpu"}


def test_operations_of_another_type_form_another_class() -> None:
    queue = queue_of(make_op("diag"), make_op("train", operation_type="training"))
    assert heads_by_class(queue) == {("diagnostic", CPU): "diag", ("training", CPU): "train"}


def test_an_unplaceable_head_does_not_hide_the_head_of_another_class() -> None:
    # The GPU operation came first and has the higher priority, but if no GPU worker exists the
    # dispatcher can still take the CPU class's head: both heads are offered.
    queue = queue_of(make_op("gpu", priority=9, requirements=GPU), make_op("cpu", priority=0))
    assert queue.pop(("diagnostic", CPU)) == "cpu"
    assert heads_by_class(queue) == {("diagnostic", GPU): "gpu"}


def test_pushing_an_operation_already_queued_does_nothing() -> None:
    op = make_op("a")
    queue = queue_of(op, op)
    assert (len(queue), drain_class(queue, ("diagnostic", CPU))) == (1, ["a"])


def test_len_counts_every_queued_operation() -> None:
    queue = queue_of(make_op("a"), make_op("b"), make_op("c", requirements=GPU))
    assert len(queue) == 3


def test_discard_removes_the_operation_from_len_at_once() -> None:
    queue = queue_of(make_op("a"), make_op("b"), make_op("c"))
    queue.discard("b")
    assert len(queue) == 2


def test_discard_removes_the_operation_from_contains_at_once() -> None:
    queue = queue_of(make_op("a"), make_op("b"))
    queue.discard("a")
    assert ("a" in queue, "b" in queue) == (False, True)


def test_a_discarded_head_is_never_offered() -> None:
    queue = queue_of(make_op("a"), make_op("b"))
    queue.discard("a")
    assert heads_by_class(queue) == {("diagnostic", CPU): "b"}


def test_a_discarded_operation_in_the_middle_is_skipped_when_it_reaches_the_head() -> None:
    queue = queue_of(make_op("a"), make_op("b"), make_op("c"))
    queue.discard("b")
    assert drain_class(queue, ("diagnostic", CPU)) == ["a", "c"]


def test_a_class_whose_every_operation_was_discarded_has_no_head() -> None:
    queue = queue_of(make_op("gpu", requirements=GPU), make_op("cpu"))
    queue.discard("gpu")
    assert heads_by_class(queue) == {("diagnostic", CPU): "cpu"}


def test_discarding_an_unknown_operation_changes_nothing() -> None:
    queue = queue_of(make_op("a"))
    queue.discard("nope")
    assert (len(queue), "a" in queue) == (1, True)


def test_pop_removes_the_operation_from_len_and_contains() -> None:
    queue = queue_of(make_op("a"), make_op("b"))
    queue.pop(("diagnostic", CPU))
    assert (len(queue), "a" in queue, "b" in queue) == (1, False, True)


def test_an_operation_popped_and_pushed_again_is_queued_again() -> None:
    # a lost attempt goes back to the queue
    queue = queue_of(make_op("a"))
    queue.pop(("diagnostic", CPU))
    queue.push(make_op("a"))
    assert ("a" in queue, heads_by_class(queue)) == (True, {("diagnostic", CPU): "a"})


def test_an_operation_pushed_again_after_its_turn_queues_behind_those_already_waiting() -> None:
    queue = queue_of(make_op("a"), make_op("b"))
    queue.pop(("diagnostic", CPU))
    queue.push(make_op("a"))
    assert drain_class(queue, ("diagnostic", CPU)) == ["b", "a"]


def test_an_empty_queue_has_no_heads_and_length_zero() -> None:
    queue = PendingQueue()
    assert (len(queue), list(queue.heads())) == (0, [])
