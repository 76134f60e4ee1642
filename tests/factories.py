"""A user-style model factory for tests of model=factory and of reproduce's trust check."""


def tiny(num_classes: int = 100):
    from stages.models import build_builtin

    return build_builtin("tiny_cnn", seed=7, num_classes=num_classes)
