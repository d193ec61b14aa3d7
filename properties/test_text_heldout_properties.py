"""`--task text`'s held-out rules (docs/runtime.md §5.5): the drawn split is a seeded partition of the
documents with ⌈10 %⌉ held out and at least one document each way; a lone document's cut loses no
character and splits no line."""

from hypothesis import given
from hypothesis import strategies as st

from esper.shell.data.text_files import cut_document, drawn_heldout


@given(n=st.integers(2, 2_000), seed=st.integers(0, 2**32 - 1))
def test_drawn_heldout_partitions_the_documents(n: int, seed: int) -> None:
    train, heldout = drawn_heldout(n, seed)
    assert sorted(train + heldout) == list(range(n))
    assert train == sorted(train) and heldout == sorted(heldout)
    assert len(heldout) == min(n - 1, max(1, -(-n // 10)))
    assert drawn_heldout(n, seed) == (train, heldout)  # a function of (n, data seed) alone


@given(text=st.text(alphabet=st.sampled_from("ab \n"), min_size=1, max_size=400))
def test_cut_document_keeps_every_character_and_cuts_on_a_line_start(text: str) -> None:
    head, tail = cut_document(text)
    assert head + tail == text
    assert len(head) <= int(0.9 * len(text))
    if "\n" in text[1:int(0.9 * len(text))]:
        assert head.endswith("\n")
