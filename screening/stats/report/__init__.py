"""The screening report: one self-contained HTML file (inline CSS, figures as base64 PNG, no
scripts, no external resources) from the STATS tables of ``screening stats`` and the RESULTS
of a run.

Sections: headline numbers; prevalence by site (forest plot) and by cohort, scanner, sex and
age band; attenuation by method (box plots); AI versus expert readers (scatter with Spearman's
rho); Bland–Altman; agreement (ICC table, rater heat map); ROC curves with bootstrap bands and
the classification table; confusion matrices; segmentation accuracy (Dice by cohort and group);
repeatability; the QC gallery of flagged scans; how to reproduce.
"""

from screening.stats.report.render import DEFAULT_THRESHOLD_HU, SECTION_HEADINGS, render_report

__all__ = ["DEFAULT_THRESHOLD_HU", "SECTION_HEADINGS", "render_report"]
