from recflow.models import zoo


def test_every_kind_has_a_description_and_both_functions():
    for name in zoo.kind_names():
        kind = zoo.get_kind(name)
        assert kind.description and callable(kind.fit) and callable(kind.export)
