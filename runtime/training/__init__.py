"""Hardware-aware training for nvmstream's emulated crossbars (``nvmstream train``).

* :mod:`.hardware` (numpy only, no torch): what a training run emulates of a device profile --
  bit widths and tile height, the calibration rule of the emulator (DAC step, ADC steps per
  (row tile, column), VMM-noise power), and draws of the programmed weights from the profile's
  own :class:`~nvmstream.devices.Device` (storage errors, programming noise, stuck cells, drift
  at a chosen age + compensation, read-noise variance). The quantizers are those of
  :mod:`nvmstream.devices.quant`: one definition, used by the emulator and by training.
* :mod:`.tasks` (numpy only): recipes (``float``, ``qat4``, ``qat4_noise``, ``hwa``), per-task
  hyperparameter presets and the ``.npz`` data format.
* :mod:`.qat` and :mod:`.loop` need torch (the optional ``train`` extra) and are imported only
  when training runs; nothing in ``make test``'s core path imports them.
"""
