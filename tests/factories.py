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


def labelled_batches(n: int = 40, batch: int = 16, seed: int = 0):
    """A user's data loader: batches of tiny_cnn-shaped images with labels (`validate.data._target_`)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        yield {"input": rng.standard_normal((rows, 3, 32, 32), dtype=np.float32),
               "labels": rng.integers(0, 100, rows)}


def agreement(predictions, labels) -> float:
    """A user's task metric (`validate.metric._target_`): the share of top-1 predictions equal to the label."""
    return float((predictions.argmax(axis=1) == labels).mean())


def preempted_once(marker: str):
    """tiny(), but the first call of a sweep (no `marker` file yet) is preempted: the process gets SIGUSR2, as SLURM
    sends a job it preempts through submitit (`--signal=USR2@...`), and submitit's handler requeues the job."""
    import os
    import signal
    import time
    from pathlib import Path

    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(30)  # the handler exits the process at the next bytecode; this is never reached in full
    return tiny()


def fixed_length(sequence: int = 64, vocab: int = 50, features: int = 8):
    """A model that only works at its own sequence length: the embedded tokens are flattened into one Linear."""
    import torch

    class FixedLength(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, features)
            self.head = torch.nn.Linear(sequence * features, 4)

        def forward(self, ids):
            return self.head(self.embed(ids).flatten(1))

    torch.manual_seed(5)
    return FixedLength()


def killed_once(marker: str):
    """tiny(), but the first call of a sweep (no `marker` file yet) kills its own process with SIGKILL, as the
    kernel's OOM killer or `kill -9` would: no handler runs, the job leaves nothing."""
    import os
    import signal
    from pathlib import Path

    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return tiny()
