

# The whole `quickstart --smoke` pipeline (search, front, export, scratch training of the pick and its
# uniform baseline on Ray, report) is run from an installed wheel, outside the checkout, by
# tests/test_wheel.py, which asserts what it produces; running it a second time in-process here
# would only add 25 s to the suite.


def test_quickstart_rejects_bad_budget_fraction(cli):
    code, _, err = cli("quickstart", "--budget-fraction", "2")
    assert code == 2 and "--budget-fraction" in err and len(err.strip().splitlines()) == 1
