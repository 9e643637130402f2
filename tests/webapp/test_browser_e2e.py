"""End to end in headless Chromium: register, open the mailed link, log in, upload a real sample, see the result
and find it in the history. A real HTTP server and a real SMTP server, both on localhost."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from werkzeug.serving import make_server

from tests.browser import chromium_page, free_port
from tests.webapp.conftest import PASSWORD, RELAXED_LIMITS
from tests.webapp.smtp import smtp_server
from webapp import create_app
from webapp.mailer import outbox as mail_queue


def test_register_verify_login_upload_history(tmp_path: Path, variant_folder: Path, samples_dir: Path) -> None:
    sample = sorted(samples_dir.glob("*.jpg"))[0]
    port = free_port()
    with smtp_server() as (inbox, smtp_port):
        app = create_app({"SECRET_KEY": "e" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                          "LESIONLITE_VARIANT": str(variant_folder), "MAIL_SERVER": "127.0.0.1",
                          "MAIL_PORT": smtp_port, "MAIL_TO_LOG": False, "MAIL_SUPPRESS_SEND": False,
                          "SESSION_COOKIE_SECURE": False, "REMEMBER_COOKIE_SECURE": False,
                          "EXTERNAL_URL": f"http://127.0.0.1:{port}", **RELAXED_LIMITS})
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        try:
            with chromium_page() as page:
                page.goto(f"{base}/auth/register")
                page.fill("input[name=email]", "robin@example.org")
                page.fill("input[name=password]", PASSWORD)
                page.check("input[name=consent]")
                page.click("main button[type=submit]")
                page.get_by_text("If that address can be used").wait_for()
                assert mail_queue.join(timeout=30)  # mail leaves in the background
                link = re.search(r"https?://\S+", inbox.text()).group(0)
                page.goto(link)
                page.get_by_text("Your email is confirmed").wait_for()
                page.fill("input[name=email]", "robin@example.org")
                page.fill("input[name=password]", PASSWORD)
                page.click("main button[type=submit]")
                page.get_by_role("heading", name="Check a dermatoscopic image").wait_for()
                page.set_input_files("input[name=image]", str(sample))
                page.click("main button[type=submit]")
                page.get_by_role("heading", name="Result").wait_for()
                verdict = page.locator("#verdict").inner_text()
                assert any(w in verdict for w in ("Most likely", "Uncertain", "Possibly malignant"))
                assert page.locator("img[alt='Your uploaded image']").evaluate("img => img.naturalWidth") > 0
                page.screenshot(path=str(tmp_path / "result.png"), full_page=True)
                page.click("text=History")
                assert page.locator("ul.history li").count() == 1
        finally:
            server.shutdown()
            thread.join(timeout=10)
