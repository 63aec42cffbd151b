"""The RFM name grid: every (recency, frequency) score pair has one of the eleven usual names."""

from shopsense.customers import rfm


def test_every_cell_has_one_of_the_eleven_names():
    assert set(rfm.GRID) == {(r, f) for r in range(1, 6) for f in range(1, 6)}
    assert set(rfm.NAMES) == {"champions", "loyal", "potential loyalists", "new", "promising",
                              "need attention", "about to sleep", "at risk", "can't lose",
                              "hibernating", "lost"}
    # the corners: recent and frequent, recent and new, long gone, gone but was frequent
    assert rfm.GRID[(5, 5)] == "champions" and rfm.GRID[(5, 1)] == "new"
    assert rfm.GRID[(1, 1)] == "lost" and rfm.GRID[(1, 5)] == "can't lose"
    assert [name for cell, name in rfm.GRID.items() if name == "lost"] == ["lost"]
