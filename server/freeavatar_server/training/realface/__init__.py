"""Real faces: a small labelled set of real photos that packages ship (photos/, labels.csv,
SOURCES.md) and the evaluation of the live path on them (`evaluate`)."""
