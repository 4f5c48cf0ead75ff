"""When training validates: every N epochs, or (--val-every 0) as often as keeps validation to a tenth."""
from pixelwise.training.engine import VAL_SHARE_INVERSE, Clock


def test_every_n_epochs_after_the_first():
    clock = Clock(budget_s=None, t0=0.0)
    assert clock.due(epoch=5, val_every=3)  # nothing validated yet: the first epoch is, to learn the cost
    clock.val_s = 4.0
    assert [e for e in range(9) if clock.due(e, val_every=3)] == [2, 5, 8]


def test_auto_validates_once_training_took_nine_validations_worth_of_time():
    clock = Clock(budget_s=None, t0=0.0, val_s=10.0)
    clock.trained_since_val_s = VAL_SHARE_INVERSE * 10.0 - 0.1
    assert not clock.due(epoch=1, val_every=0)
    clock.trained_since_val_s = VAL_SHARE_INVERSE * 10.0
    assert clock.due(epoch=1, val_every=0)
