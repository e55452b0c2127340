from recflow import config
from recflow.models import zoo


def test_every_configurable_model_has_a_kind():
    assert set(zoo.kind_names()) == set(config.MODELS)
    for name in config.MODELS:
        kind = zoo.get_kind(name)
        assert kind.description and callable(kind.fit) and callable(kind.export)
