# An app's release image, built by `deploy build` from the app's deploykit.yml (deploy_tool/appbuild.py), with
# no network inside: the app's requirements and the servers come from wheels made on the controller for the
# base's Python. Context: a folder deploy build assembles: app/ (the app's files), wheels/, requirements/
# (app.txt, servers.txt; eventlet.txt, empty unless build.eventlet), deploykit/ (the launcher, variants.yml,
# build.json). `deploy build --env NAME=VALUE` appends ENV lines at the end, after the build's checks.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS build
COPY wheels /wheels
COPY requirements /requirements
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels --no-cache-dir -q \
      -r /requirements/servers.txt -r /requirements/app.txt \
 && if [ -s /requirements/eventlet.txt ]; then \
      python3 -m venv /opt/venv-eventlet \
      && /opt/venv-eventlet/bin/pip install --no-index --find-links /wheels --no-cache-dir -q \
           -r /requirements/eventlet.txt -r /requirements/app.txt; \
    fi

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --no-create-home app
COPY --from=build /opt/ /opt/
COPY deploykit /opt/deploykit
COPY app /opt/app
ARG WSGI
ARG ASGI=""
# the variants of the table its launcher holds: deploy refuses another before it touches a host
ARG VARIANTS=""
LABEL io.deploykit.variants=${VARIANTS}
ARG DJANGO_SETTINGS=""
ENV PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    DEPLOYKIT_WSGI=${WSGI} \
    DEPLOYKIT_ASGI=${ASGI} \
    DEPLOYKIT_APP_DIR=/opt/app \
    DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS}
WORKDIR /opt/app
# The build's checks: the app is imported as the servers will import it (its own error fails the build), and
# Django's static files are collected; where they are is written to /opt/deploykit/static.json.
RUN /opt/venv/bin/python /opt/deploykit/deploykit_build.py
RUN python3 -m compileall -q /opt/app /opt/deploykit
USER app
STOPSIGNAL SIGTERM
CMD ["/opt/venv/bin/python", "/opt/deploykit/deploykit_serve.py"]
ARG RELEASE=dev
ENV DEPLOYKIT_RELEASE=${RELEASE}
LABEL io.deploykit.release=${RELEASE}
