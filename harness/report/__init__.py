"""Run reports: JSON (machine), JUnit XML (CI), HTML (people)."""
