"""lossbench: how does the choice of loss function (and optimizer) change how a network trains and overfits?"""

__version__ = "0.1.0"
