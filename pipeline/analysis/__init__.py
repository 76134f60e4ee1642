"""Analysis of recorded runs: the build to ship (select), regressions (compare), the end-of-sweep table (summary),
the HTML report and its plots, and what a sweep swept (sweeps)."""
