"""The pure listing of kd's one-line messages."""
from kdstore.wording import first_few


def test_first_few_counts_what_it_leaves_out():
    assert first_few([]) == ""
    assert first_few(["'a'"]) == "'a'"
    assert first_few(map(repr, "abcde")) == "'a', 'b', 'c', 'd', 'e'"
    assert first_few(map(repr, "abcdefg")) == "'a', 'b', 'c', 'd', 'e' and 2 more"
    assert first_few((str(i) for i in range(30)), shown=2) == "0, 1 and 28 more"
