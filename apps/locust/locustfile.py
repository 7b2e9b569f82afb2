"""The Django guestbook as its users use it: browse the page, and now and then write an entry (GET the form,
POST it with its CSRF token, follow the redirect). Run by `deploy bench --engine locust`, or by hand:

    locust -f apps/locust/locustfile.py --headless -u 20 -r 20 -t 10s --host http://HOST --json
    # distributed: one master, workers on this or other machines
    locust -f apps/locust/locustfile.py --master --headless --expect-workers 2 -u 40 -r 40 -t 30s --host http://HOST
    locust -f apps/locust/locustfile.py --worker --master-host MASTER

DEPLOYKIT_HOST_HEADER sets the Host header (nginx's server_name, one of Django's ALLOWED_HOSTS); each user
sends one request per second at most (DEPLOYKIT_USER_RATE), so the load is a fixed rate: users x rate.
"""

import os
import re
import uuid

from locust import HttpUser, constant_throughput, task

TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class GuestbookUser(HttpUser):
    wait_time = constant_throughput(float(os.environ.get("DEPLOYKIT_USER_RATE", "1")))

    def on_start(self):
        self.client.headers["Host"] = os.environ.get("DEPLOYKIT_HOST_HEADER", "demo.lab")

    @task(4)
    def browse(self):
        self.client.get("/", name="GET /")

    @task(1)
    def write(self):
        page = self.client.get("/", name="GET / (form)")
        match = TOKEN.search(page.text)
        if not match:
            page.failure("no CSRF token in the page") if hasattr(page, "failure") else None
            return
        form = {"csrfmiddlewaretoken": match.group(1), "name": "locust", "message": uuid.uuid4().hex[:12]}
        with self.client.post("/", data=form, name="POST /", allow_redirects=False, catch_response=True) as answer:
            if answer.status_code != 302:
                answer.failure(f"POST answered {answer.status_code}, not 302")
                return
        self.client.get(answer.headers.get("Location", "/"), name="GET / (after POST)")
