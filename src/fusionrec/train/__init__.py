"""Training: the one training request (:mod:`.request`), the loop that fits the fusion model
(:mod:`.loop`), the run from files to a candidate artifact and into the registry (:mod:`.run`), the
peers it is compared with (:mod:`.peers`), and the comparison of them all on one split (:mod:`.compare`)."""
