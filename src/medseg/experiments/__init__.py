"""The ``medseg experiment`` runners, each a staged, cached, resumable pipeline of medseg's parts
(:mod:`~medseg.experiments.base`): CMMC (:mod:`~medseg.experiments.cmmc`), ESP-MedSAM (:mod:`~medseg.experiments.esp`),
MedSASS (:mod:`~medseg.experiments.medsass`) and the universal model (:mod:`~medseg.experiments.universal`)."""
