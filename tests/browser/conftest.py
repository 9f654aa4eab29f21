import browser_lab


def pytest_terminal_summary(terminalreporter):
    """List the browser test's screenshots and timings, so a CI log says where to look."""
    if browser_lab.REPORT or browser_lab.SCREENSHOTS:
        terminalreporter.section("browser test")
        for line in browser_lab.REPORT:
            terminalreporter.write_line(line)
        for path in browser_lab.SCREENSHOTS:
            terminalreporter.write_line(f"screenshot: {path}")
