-- Argo CD health check for every kubeforge.io kind (DatasetVersion, TrainingJob, Benchmark,
-- InferenceService): they share one status shape (phase, conditions, observedGeneration), so
-- they share one script. Argo CD passes the resource as `obj` and wants {status, message}.
--
-- Conditions come first, read the way Flux's kstatus reads them (Stalled, Reconciling, Ready),
-- then the phase; a status written for an older generation says nothing about this one.
local hs = {status = "Progressing", message = "Waiting for the Kubeforge operator"}
local st = obj.status
if st == nil then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and st.observedGeneration ~= nil and st.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    if c.type ~= nil then
      conditions[c.type] = c
    end
  end
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  if st.message ~= nil and st.message ~= "" then
    return st.message
  end
  return fallback
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local phase = st.phase

if is_true(conditions["Stalled"]) then
  hs.status = "Degraded"
  hs.message = text(conditions["Stalled"], "Stalled")
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = text(conditions["Ready"], "Failed")
  return hs
end
-- A suspended TrainingJob (spec.suspend, e.g. held by a Kueue queue) is neither done nor broken.
if obj.spec ~= nil and obj.spec.suspend == true and phase ~= "Succeeded" then
  hs.status = "Suspended"
  hs.message = text(conditions["Ready"], "Suspended")
  return hs
end
if phase == "Stopped" then
  hs.status = "Suspended"
  hs.message = text(conditions["Ready"], "Stopped")
  return hs
end
if is_true(conditions["Reconciling"]) then
  hs.message = text(conditions["Reconciling"], "Reconciling")
  return hs
end
if is_true(conditions["Ready"]) then
  hs.status = "Healthy"
  hs.message = text(conditions["Ready"], "Ready")
  return hs
end
if phase == "Succeeded" and conditions["Ready"] == nil then
  hs.status = "Healthy"
  hs.message = text(nil, "Succeeded")
  return hs
end
-- Pending, Waiting (for a referenced resource), Running, or Ready=False on its way.
hs.message = text(conditions["Ready"], phase or "Progressing")
return hs
