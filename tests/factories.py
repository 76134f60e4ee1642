"""A user-style model factory for tests of model=factory and of reproduce's trust check."""


def tiny(num_classes: int = 100):
    from stages.models import build_builtin

    return build_builtin("tiny_cnn", seed=7, num_classes=num_classes)


def two_inputs(vocab: int = 50, features: int = 8):
    """Token ids (looked up in an embedding) and a float feature vector per sample: two inputs, two outputs."""
    import torch

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, features)
            self.mix = torch.nn.Linear(features, 4)

        def forward(self, ids, x):
            hidden = self.embed(ids) + x.unsqueeze(1)          # (batch, sequence, features)
            return hidden, self.mix(hidden.mean(dim=1))        # two outputs

    torch.manual_seed(3)
    return TwoInputs()
