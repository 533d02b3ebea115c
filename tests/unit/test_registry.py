import pytest

from ilp_ray.registry import Registry


class Base:
    pass


class Impl(Base):
    pass


def test_lazy_entry_resolves_and_is_type_checked():
    reg = Registry("thing", Base)
    reg.register("impl", "tests.unit.test_registry:Impl")
    reg.register("bad", "collections:OrderedDict")
    assert reg.get("impl") is Impl
    with pytest.raises(TypeError, match="not a subclass of Base"):
        reg.get("bad")


def test_unknown_name_suggests():
    reg = Registry("scoring engine", Base)
    reg.register("transformers", Impl)
    with pytest.raises(KeyError, match="Did you mean 'transformers'"):
        reg.get("transformer")


def test_decorator_and_duplicates():
    reg = Registry("thing", Base)

    @reg.register("a")
    class A(Base):
        pass

    assert reg.create("a").__class__ is A
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", Impl)
    with pytest.raises(ValueError, match="module:attr"):
        reg.register("b", "no_colon")
