"""A user's own loss, as someone outside lossbench would write it (used by tests/test_losses.py).

Nothing in lossbench knows this module: it is chosen purely by ``_target_``, e.g.
``python -m lossbench.train loss=ce loss.name=mine loss.criterion._target_=user_losses.MyLoss``.
"""

from torch import Tensor, nn


class MyLoss(nn.Module):
    r"""Temperature-scaled cross-entropy.

    .. math::
        \ell(z, y) = -\log \mathrm{softmax}(z / T)_y

    Shape:
        - logits: :math:`(N, C)`
        - target: :math:`(N)` class indices
        - output: scalar; :math:`(N)` if ``reduction='none'``
    """

    def __init__(self, temperature: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.temperature = temperature
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits / self.temperature, target, reduction=self.reduction)
